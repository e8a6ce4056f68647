//! Progress of long operations on a terminal (indicatif), on stderr; nothing drawn when
//! stderr is not a terminal, so logs and pipes get only the lines that say what happened.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use plugboard_installer::{Progress, ProgressFn};

/// Whether progress is drawn: stderr is a terminal.
pub(crate) fn on_terminal() -> bool {
    std::io::IsTerminal::is_terminal(&std::io::stderr())
}

fn style(template: &str) -> ProgressStyle {
    // The templates are constants of this file: a bad one is a bug caught by any run on
    // a terminal; fall back to the plain style rather than fail an install over it.
    ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar())
}

fn bar(len: Option<u64>) -> ProgressBar {
    let bar = match len {
        Some(n) => ProgressBar::with_draw_target(Some(n), ProgressDrawTarget::stderr()),
        None => ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr()),
    };
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}

/// A download's bytes: a bar with the rate on a terminal, else one line at the end. The
/// bar goes when the download ends, or when the install's next stage is drawn.
pub(crate) struct Download {
    tty: bool,
    last: Option<(u64, Option<u64>)>,
    started: Option<std::time::Instant>,
}

impl Download {
    pub(crate) fn new() -> Self {
        Download {
            tty: on_terminal(),
            last: None,
            started: None,
        }
    }

    fn line(got: u64, total: Option<u64>) -> String {
        match total {
            Some(t) => format!("downloaded {got} of {t} bytes"),
            None => format!("downloaded {got} bytes"),
        }
    }

    /// `received` so far of `total` (when the server said); a retry starts again at 0.
    pub(crate) fn update(&mut self, received: u64, total: Option<u64>) {
        if self.last.is_none() {
            self.started = Some(std::time::Instant::now());
        }
        self.last = Some((received, total));
        if !self.tty {
            return;
        }
        let mut slot = stages().download.lock().unwrap_or_else(|e| e.into_inner());
        let bar = slot.get_or_insert_with(|| {
            let b = bar(total);
            b.set_style(style(if total.is_some() {
                "{spinner} downloading {bytes}/{total_bytes} {wide_bar} {bytes_per_sec}, {eta} left"
            } else {
                "{spinner} downloading {bytes} ({bytes_per_sec})"
            }));
            b
        });
        bar.set_position(received);
        if total == Some(received)
            && let Some(done) = slot.take()
        {
            // What was downloaded stays on the screen: a bar may be drawn at most 20 times
            // a second, and a fast download would leave no trace of itself.
            let took = self.started.map(|t| t.elapsed()).unwrap_or_default();
            let rate = received as f64 / took.as_secs_f64().max(1e-3);
            done.println(format!(
                "downloaded {} in {:.1} s ({}/s)",
                indicatif::HumanBytes(received),
                took.as_secs_f64(),
                indicatif::HumanBytes(rate as u64)
            ));
            done.finish_and_clear();
        }
    }

    /// Clears the bar, or prints the one line off a terminal.
    pub(crate) fn end(&mut self) {
        stages().clear();
        if let Some((got, total)) = self.last.take()
            && !self.tty
        {
            eprintln!("{}", Self::line(got, total));
        }
    }
}

/// The process's stage display: the CLI runs one operation at a time.
pub(crate) fn stages() -> &'static Stages {
    static STAGES: std::sync::OnceLock<Stages> = std::sync::OnceLock::new();
    STAGES.get_or_init(Stages::default)
}

/// The installer's stages (loading packages at boot, compiling, checking, switching),
/// drawn as one bar or spinner at a time. Cheap to clone.
#[derive(Clone, Default)]
pub(crate) struct Stages {
    bar: Arc<Mutex<Option<ProgressBar>>>,
    /// A download's bar, cleared when a stage is drawn.
    download: Arc<Mutex<Option<ProgressBar>>>,
}

impl Stages {
    /// The observer to hand [`plugboard_installer::Installer::with_progress`]; `None` off
    /// a terminal.
    pub(crate) fn observer(&self) -> Option<ProgressFn> {
        if !on_terminal() {
            return None;
        }
        let me = self.clone();
        Some(Arc::new(move |p: Progress<'_>| me.show(p)))
    }

    fn show(&self, p: Progress<'_>) {
        if let Some(d) = self
            .download
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            d.finish_and_clear();
        }
        let mut slot = self.bar.lock().unwrap_or_else(|e| e.into_inner());
        match p {
            Progress::Loading {
                package,
                done,
                total,
            } => {
                let b = slot.get_or_insert_with(|| bar(Some(total as u64)));
                if b.length() != Some(total as u64) {
                    b.set_length(total as u64);
                }
                b.set_style(style(
                    "{spinner} loading packages {pos}/{len} {wide_bar} {msg}",
                ));
                b.set_position(done as u64);
                b.set_message(package.to_owned());
            }
            Progress::Loaded { .. } => {
                if let Some(b) = slot.take() {
                    b.finish_and_clear();
                }
            }
            Progress::Compiling { package }
            | Progress::Checking { package }
            | Progress::Switching { package } => {
                let what = match p {
                    Progress::Compiling { .. } => "compiling",
                    Progress::Checking { .. } => "starting and checking the health of",
                    _ => "switching to",
                };
                let b = slot.get_or_insert_with(|| bar(None));
                b.set_style(style("{spinner} {msg} ({elapsed})"));
                // Each stage is said once as a line (drawn at once, whatever the bar's
                // rate limit), then spun while it lasts.
                b.println(format!("{what} {package}"));
                b.set_message(format!("{what} {package}"));
            }
            // Later stages this version does not know: nothing to draw.
            _ => {}
        }
    }

    /// Runs `f` (which writes to the terminal) with the bar out of the way, then redraws it.
    fn suspend(&self, f: impl FnOnce()) {
        let bar = self
            .bar
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .or_else(|| {
                self.download
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone()
            });
        match bar {
            Some(b) => b.suspend(f),
            None => f(),
        }
    }

    /// Clears whatever is drawn (an operation ended).
    pub(crate) fn clear(&self) {
        for slot in [&self.download, &self.bar] {
            if let Some(b) = slot.lock().unwrap_or_else(|e| e.into_inner()).take() {
                b.finish_and_clear();
            }
        }
    }
}

/// Log lines on stderr, each written with the progress bar out of the way: the tracing
/// subscriber's writer.
pub(crate) struct LogWriter;

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogWriter {
    type Writer = LogLine;

    fn make_writer(&'a self) -> LogLine {
        LogLine(Vec::new())
    }
}

/// One log event's text, written out when the subscriber is done with it.
pub(crate) struct LogLine(Vec<u8>);

impl std::io::Write for LogLine {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for LogLine {
    fn drop(&mut self) {
        let line = std::mem::take(&mut self.0);
        if line.is_empty() {
            return;
        }
        stages().suspend(|| {
            // Nowhere to report a failure to write a log line.
            let _ = std::io::Write::write_all(&mut std::io::stderr().lock(), &line);
        });
    }
}
