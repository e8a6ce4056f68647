//! Fetch: a test plugin that reaches out over HTTP. `on_reach_fetch` GETs the state's
//! `url`, following redirects as an ordinary client would (each a new request the host
//! checks). Its component imports `wasi:http/outgoing-handler`: its manifests must ask for
//! `http`.

use plugboard_pdk::serde_json::Value;
use plugboard_pdk::{Plugin, Reply};

struct Fetch;

impl Plugin for Fetch {
    type State = Value;

    fn call(&self, event: &str, state: Value) -> Result<Reply<Value>, String> {
        match event {
            "on_reach_fetch" => {
                // GET `url`, following up to 3 redirects as an ordinary client would (each
                // is a new request the host checks); the outcome as state.
                let mut url = state["url"].as_str().unwrap_or_default().to_owned();
                let mut hops = 0;
                let out = loop {
                    match plugboard_pdk::http::get(&url) {
                        Ok(r) if (301..=308).contains(&r.status) && hops < 3 => {
                            let to = r
                                .headers
                                .iter()
                                .find(|(k, _)| k.eq_ignore_ascii_case("location"));
                            match to {
                                Some((_, v)) => {
                                    url = String::from_utf8_lossy(v).into_owned();
                                    hops += 1;
                                }
                                None => {
                                    break plugboard_pdk::serde_json::json!({ "status": r.status });
                                }
                            }
                        }
                        Ok(r) => {
                            break plugboard_pdk::serde_json::json!({
                                "status": r.status,
                                "bytes": r.body.len(),
                                "body": String::from_utf8_lossy(&r.body[..r.body.len().min(200)]),
                                "hops": hops,
                            });
                        }
                        Err(e) => {
                            break plugboard_pdk::serde_json::json!({ "error": e.to_string(), "hops": hops });
                        }
                    }
                };
                Ok(Reply::Continue(out))
            }
            _ => Ok(Reply::Continue(state)),
        }
    }
}

plugboard_pdk::export_plugin!(Fetch, Fetch);
