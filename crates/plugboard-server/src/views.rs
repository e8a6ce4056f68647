//! The JSON bodies the admin API answers with: one type per response, each deriving its
//! OpenAPI schema, so that the document is the code and cannot drift from it. Domain
//! types (records, failures, packages, activity) are answered as they are; these add what
//! the API puts around them.

use plugboard_core::{Mode, PluginRecord, Priority, Status};
use plugboard_engine::{CodeKind, Failure, Health, PluginInfo, PluginProfile};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use crate::error::ErrorDetail;

/// `GET /health` and `GET /ready`: the process is up and serving calls (from its compiled
/// chains, which never touch the database), and whether its store is reachable, which
/// operations (lifecycle, settings, installs) need.
#[derive(Serialize, ToSchema)]
pub(crate) struct Liveness {
    /// Always `ok`: the process answers.
    #[schema(example = "ok")]
    pub(crate) status: &'static str,
    /// Calls are served: always true while the process answers, database or not.
    pub(crate) serving: bool,
    /// Operations can be served: the store answered its last operation (the server asks
    /// it at least every 250 ms).
    pub(crate) ready: bool,
    /// The store's side.
    pub(crate) store: StoreReadiness,
}

/// The store as `/health` reports it.
#[derive(Serialize, ToSchema)]
pub(crate) struct StoreReadiness {
    /// `sqlite` or `postgres`.
    #[schema(example = "sqlite")]
    pub(crate) backend: &'static str,
    /// Whether the database answered the last operation.
    pub(crate) reachable: bool,
    /// Why not, when not.
    pub(crate) error: Option<String>,
    /// Times the connection that follows other hosts was lost and made again.
    pub(crate) reconnects: u64,
    /// Full reloads after those reconnects (what changed meanwhile, applied).
    pub(crate) resyncs: u64,
    /// The store's change generation this host has applied in full (records, packages,
    /// grants, settings); hosts sharing a database agree on it once converged. Absent on
    /// a host that does not follow packages.
    pub(crate) synced_generation: Option<i64>,
}

/// `GET /api/health`: each plugin's health check and each event's chain.
#[derive(Serialize, ToSchema)]
pub(crate) struct HostHealth {
    /// Every registered plugin.
    pub(crate) plugins: Vec<Health>,
    /// Every declared event.
    pub(crate) events: Vec<EventHealth>,
}

/// An event's chain health.
#[derive(Serialize, ToSchema)]
pub(crate) struct EventHealth {
    /// The event.
    pub(crate) name: String,
    /// Plugins in its chain now.
    pub(crate) chain_len: usize,
    /// Whether every plugin in its chain passed its health check.
    pub(crate) healthy: bool,
}

/// A plugin as an event's listing shows it.
#[derive(Serialize, ToSchema)]
pub(crate) struct PluginSummary {
    /// The plugin.
    pub(crate) name: String,
    /// Its status.
    pub(crate) status: Status,
    /// Lower runs first.
    pub(crate) priority: Priority,
    /// The kind of its code, when loaded.
    pub(crate) kind: Option<CodeKind>,
    /// Whether it is in the chain now (around it, for a wrapper).
    pub(crate) in_chain: bool,
    /// It runs around the rest of the chain (a wrapper).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub(crate) wrapper: bool,
    /// Hard dependencies that are not active.
    pub(crate) waiting_for: Vec<String>,
    /// The package that installed it, if one did.
    pub(crate) package: Option<String>,
}

/// An event, its chain and its plugins.
#[derive(Serialize, ToSchema)]
pub(crate) struct EventView {
    /// The event's unique name.
    pub(crate) name: String,
    /// Its section.
    pub(crate) section: String,
    /// When it fires.
    pub(crate) doc: String,
    /// The top-level fields of its state (of the input every plugin is given, for a
    /// collecting event).
    pub(crate) fields: Vec<String>,
    /// How its chain runs: `waterfall` (the state passes from plugin to plugin) or
    /// `collect` (each plugin answers the same input; a call returns every answer).
    pub(crate) mode: Mode,
    /// The wrappers that run around the chain, outermost first.
    pub(crate) wrappers: Vec<String>,
    /// The plugins that run on a call, in order.
    pub(crate) chain: Vec<String>,
    /// Every plugin registered on it.
    pub(crate) plugins: Vec<PluginSummary>,
    /// The JSON Schema of its state (`GET /api/events/{name}` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub(crate) schema: Option<Value>,
    /// For a collecting event, the JSON Schema of one plugin's contribution
    /// (`GET /api/events/{name}` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub(crate) output: Option<Value>,
}

/// How a plugin's step ended.
#[derive(Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum StepOutcome {
    /// It replied continue.
    Continued,
    /// It replied halt: the chain stopped there.
    Halted,
    /// It failed (see `failure`).
    Failed,
    /// A wrapper ran around the rest of the chain (its time includes theirs).
    Wrapped,
}

/// One plugin's step in a call.
#[derive(Serialize, ToSchema)]
pub(crate) struct TraceStep {
    /// The plugin.
    pub(crate) plugin: String,
    /// How long the step took, in microseconds.
    pub(crate) elapsed_us: f64,
    /// How it ended.
    pub(crate) outcome: StepOutcome,
    /// Why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) failure: Option<Failure>,
    /// What the step changed in the state it was given (empty for a failed step, or one
    /// that replied the state as it was).
    pub(crate) changes: Vec<StateChange>,
}

/// One difference a step made to the state, at a JSON Pointer (RFC 6901) path.
#[derive(Serialize, ToSchema, Debug, PartialEq)]
pub(crate) struct StateChange {
    /// Where, e.g. `/extra/flagged` or `/tags/2`.
    pub(crate) path: String,
    /// The value before the step, any JSON (absent: added).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Value>)]
    pub(crate) before: Option<Value>,
    /// The value after it, any JSON (absent: removed).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Value>)]
    pub(crate) after: Option<Value>,
}

/// Changes past this many in one step are summed up in a last entry at the root.
const MAX_CHANGES: usize = 200;

/// The differences from `before` to `after`, in the state's order, down to the values
/// that differ (where both sides are objects or arrays, their members are compared); a step that changed more than [`MAX_CHANGES`] places ends with one entry saying
/// how many were left out.
pub(crate) fn state_changes(before: &Value, after: &Value) -> Vec<StateChange> {
    let mut d = Differ::default();
    d.diff(before, after);
    if d.left_out > 0 {
        d.out.push(StateChange {
            path: String::new(),
            before: None,
            after: Some(Value::String(format!("… and {} more changes", d.left_out))),
        });
    }
    d.out
}

#[derive(Default)]
struct Differ {
    path: String,
    out: Vec<StateChange>,
    left_out: usize,
}

impl Differ {
    fn push(&mut self, before: Option<&Value>, after: Option<&Value>) {
        if self.out.len() < MAX_CHANGES {
            self.out.push(StateChange {
                path: self.path.clone(),
                before: before.cloned(),
                after: after.cloned(),
            });
        } else {
            self.left_out += 1;
        }
    }

    fn diff(&mut self, before: &Value, after: &Value) {
        let len = self.path.len();
        match (before, after) {
            (Value::Object(b), Value::Object(a)) => {
                for (k, bv) in b {
                    pointer_push(&mut self.path, k);
                    match a.get(k) {
                        Some(av) => self.diff(bv, av),
                        None => self.push(Some(bv), None),
                    }
                    self.path.truncate(len);
                }
                for (k, av) in a.iter().filter(|(k, _)| !b.contains_key(*k)) {
                    pointer_push(&mut self.path, k);
                    self.push(None, Some(av));
                    self.path.truncate(len);
                }
            }
            (Value::Array(b), Value::Array(a)) => {
                for i in 0..b.len().max(a.len()) {
                    pointer_push(&mut self.path, &i.to_string());
                    match (b.get(i), a.get(i)) {
                        (Some(bv), Some(av)) => self.diff(bv, av),
                        (bv, av) => self.push(bv, av),
                    }
                    self.path.truncate(len);
                }
            }
            (b, a) if b != a => self.push(Some(b), Some(a)),
            _ => {}
        }
    }
}

/// Appends one escaped JSON Pointer segment.
fn pointer_push(path: &mut String, segment: &str) {
    path.push('/');
    path.push_str(&segment.replace('~', "~0").replace('/', "~1"));
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn changes_name_each_place_a_step_touched() {
        let before = json!({"data": {"title": "hi", "tags": ["a"]}, "extra": {}, "gone": 1});
        let after = json!({"data": {"title": "HI", "tags": ["a", "b"]}, "extra": {"a/b": true}});
        let c = state_changes(&before, &after);
        let short: Vec<_> = c
            .iter()
            .map(|c| (c.path.as_str(), c.before.clone(), c.after.clone()))
            .collect();
        assert_eq!(
            short,
            [
                ("/data/title", Some(json!("hi")), Some(json!("HI"))),
                ("/data/tags/1", None, Some(json!("b"))),
                ("/extra/a~1b", None, Some(json!(true))),
                ("/gone", Some(json!(1)), None),
            ]
        );
        assert!(state_changes(&after, &after).is_empty());
        // A whole new type at a place is one change, not one per field.
        assert_eq!(
            state_changes(&json!({"x": 1}), &json!({"x": {"y": 2}})).len(),
            1
        );
    }

    #[test]
    fn a_step_that_changed_everything_is_summed_up() {
        let before = Value::Array((0..500).map(|i| json!(i)).collect());
        let after = Value::Array((0..500).map(|i| json!(i + 1)).collect());
        let c = state_changes(&before, &after);
        assert_eq!(c.len(), MAX_CHANGES + 1);
        assert_eq!(c[MAX_CHANGES].after, Some(json!("… and 300 more changes")));
    }
}

/// `POST /api/events/{name}/call`: the state the chain produced, or why it produced none.
#[derive(Serialize, ToSchema)]
pub(crate) struct CallResult {
    /// The final state (null when the call failed).
    #[schema(value_type = Option<Object>)]
    pub(crate) result: Option<Value>,
    /// Why the call produced no state (null when it succeeded).
    pub(crate) error: Option<ErrorDetail>,
    /// The steps that ran, in order.
    pub(crate) trace: Vec<TraceStep>,
    /// The plugin that halted the chain, if one did.
    pub(crate) halted_by: Option<String>,
}

/// A plugin with everything known about it.
#[derive(Serialize, ToSchema)]
pub(crate) struct PluginView {
    /// The record and the runtime's view of it.
    #[serde(flatten)]
    pub(crate) info: PluginInfo,
    /// The package that installed it, if one did.
    pub(crate) package: Option<String>,
}

/// What an operator can do to a plugin.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum PluginAction {
    /// Start it (and what it holds).
    Start,
    /// Stop it; its callback cannot veto.
    Stop,
    /// Stop and start it.
    Restart,
    /// Start a stopped plugin again.
    Enable,
    /// Unload its code; the record stays, stopped.
    Delete,
    /// Remove its record.
    Unregister,
}

impl PluginAction {
    /// Every action.
    pub(crate) const ALL: [PluginAction; 6] = [
        PluginAction::Start,
        PluginAction::Stop,
        PluginAction::Restart,
        PluginAction::Enable,
        PluginAction::Delete,
        PluginAction::Unregister,
    ];

    /// Its name in a path.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            PluginAction::Start => "start",
            PluginAction::Stop => "stop",
            PluginAction::Restart => "restart",
            PluginAction::Enable => "enable",
            PluginAction::Delete => "delete",
            PluginAction::Unregister => "unregister",
        }
    }

    /// The action named `name`.
    pub(crate) fn parse(name: &str) -> Option<PluginAction> {
        PluginAction::ALL.into_iter().find(|a| a.as_str() == name)
    }
}

/// A plugin an operation could not change.
#[derive(Serialize, ToSchema)]
pub(crate) struct Skipped {
    /// The plugin.
    pub(crate) plugin: String,
    /// Why.
    pub(crate) error: ErrorDetail,
}

/// A plugin whose callback failed on an operation it may not refuse: the operation went
/// ahead.
#[derive(Serialize, ToSchema)]
pub(crate) struct Overridden {
    /// The plugin.
    pub(crate) plugin: String,
    /// What its callback said.
    pub(crate) callback_error: String,
}

impl Overridden {
    pub(crate) fn list(pairs: &[(String, String)]) -> Vec<Overridden> {
        pairs
            .iter()
            .map(|(plugin, why)| Overridden {
                plugin: plugin.clone(),
                callback_error: why.clone(),
            })
            .collect()
    }
}

/// `POST /api/plugins/{name}/{action}`: what the operation did.
#[derive(Serialize, ToSchema)]
pub(crate) struct ActionResult {
    /// The action.
    pub(crate) action: PluginAction,
    /// The plugin it was asked of.
    pub(crate) plugin: String,
    /// The records it changed, as they are now.
    pub(crate) changed: Vec<PluginRecord>,
    /// Plugins it could not change.
    pub(crate) skipped: Vec<Skipped>,
    /// Plugins whose callback failed; the operation went ahead.
    pub(crate) overridden: Vec<Overridden>,
}

/// `DELETE /api/packages/{name}`: what the uninstall did.
#[cfg(feature = "packages")]
#[derive(Serialize, ToSchema)]
pub(crate) struct Uninstalled {
    /// The package.
    pub(crate) uninstalled: String,
    /// Plugins of other packages now held (their hard dependency is gone).
    pub(crate) held: Vec<String>,
    /// Plugins whose `unregister` callback failed; they were removed all the same.
    pub(crate) overridden: Vec<Overridden>,
}

/// A stored setting.
#[derive(Serialize, ToSchema)]
pub(crate) struct SettingView {
    /// Its name, as stored.
    pub(crate) name: String,
    /// Its value: any JSON (a package's settings are checked against its schema, the
    /// `installer` setting field by field), without its secret fields.
    pub(crate) configs: Value,
    /// The secret fields that are set (write-only: their values are never returned; a
    /// `PUT` that leaves one out keeps it, `null` removes it).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) secrets: Vec<String>,
    /// When it last changed (`GET /api/settings` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub(crate) updated_at: Option<String>,
}

/// `DELETE /api/settings/{name}`.
#[derive(Serialize, ToSchema)]
pub(crate) struct Deleted {
    /// The setting removed, as it was stored.
    pub(crate) deleted: String,
}

/// `GET /api/profile`: an event's plugins' times.
#[derive(Serialize, ToSchema)]
pub(crate) struct EventProfile {
    /// The event.
    pub(crate) event: String,
    /// Its plugins, in chain order.
    pub(crate) plugins: Vec<PluginProfile>,
}
