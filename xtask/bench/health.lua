-- wrk script: the baseline, GET /health (routing, no auth, no engine).
done = function(summary, latency, requests)
  io.write(string.format("requests %d  rps %.0f  p50 %.2f ms  p99 %.2f ms\n",
    summary.requests, summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
