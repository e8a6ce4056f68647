//! Observer: counts the calls of `on_user_after_save_failure` without decoding the state
//! (`call_lazy` never asks for it, so the state goes on as the bytes it came in), and
//! logs the count when it is stopped. The benchmarks use it for the floor of a typed
//! plugin step.

use std::sync::atomic::{AtomicU64, Ordering};

use plugboard_pdk::reference::OnUserAfterSaveFailure;
use plugboard_pdk::{Flow, Lazy, Plugin, PluginRecord};

struct Observer {
    calls: AtomicU64,
}

impl Plugin for Observer {
    type State = OnUserAfterSaveFailure;

    fn call_lazy(&self, _event: &str, _state: &mut Lazy<'_, Self::State>) -> Result<Flow, String> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        Ok(Flow::Continue)
    }

    fn lifecycle(&self, op: &str, record: &PluginRecord) -> Result<(), String> {
        if op == "stop" {
            plugboard_pdk::log::info(&format!(
                "{} saw {} calls",
                record.name,
                self.calls.load(Ordering::Relaxed)
            ));
        }
        Ok(())
    }
}

plugboard_pdk::export_plugin!(
    Observer,
    Observer {
        calls: AtomicU64::new(0)
    }
);
