//! The control path's protocol (begin → change the records → settle → finish: commit,
//! rebuild, publish), the lifecycle operations on it, and the holds and releases of
//! dependents.

use super::*;

pub(super) fn statuses(ctl: &Control) -> HashMap<String, Status> {
    ctl.plugins
        .iter()
        .map(|(n, e)| (n.clone(), e.record.status))
        .collect()
}

pub(super) fn nodes(ctl: &Control) -> HashMap<&str, Node<'_>> {
    ctl.plugins
        .iter()
        .map(|(n, e)| {
            (
                n.as_str(),
                Node {
                    record: &e.record,
                    loaded: !e.unloaded && (e.code.is_some() || ctl.records_only || ctl.booting),
                },
            )
        })
        .collect()
}

pub(super) fn active_of(ctl: &Control) -> HashSet<String> {
    active_set(&nodes(ctl))
        .into_iter()
        .map(str::to_owned)
        .collect()
}

pub(super) fn waiting_for(record: &PluginRecord, active: &HashSet<String>) -> Vec<String> {
    if record.depend_type != DependType::Hard {
        return Vec::new();
    }
    record
        .depends
        .iter()
        .filter(|d| !active.contains(*d))
        .cloned()
        .collect()
}

pub(super) fn info_of(views: &Views, e: &Entry, dependents: Vec<String>) -> PluginInfo {
    let active = &views.active;
    let last_error = e.stats.last_error.lock().ok().and_then(|l| l.clone());
    PluginInfo {
        record: e.record.clone(),
        loaded: e.code.is_some(),
        kind: e.code.as_ref().map(Code::kind),
        wrapper: e.code.as_ref().is_some_and(Code::is_wrapper),
        in_chain: active.contains(&e.record.name) && e.record.status.is_active(),
        waiting_for: waiting_for(&e.record, active),
        dependents,
        failures: e.stats.failures.load(Relaxed),
        consecutive_failures: e.stats.consecutive.load(Relaxed),
        last_error,
    }
}

/// One control-path change in progress. Every control operation follows one protocol:
/// [`Shared::begin`] (the statuses before, to report what moved; the records before, to
/// write the difference through and to roll back) → change the records →
/// [`Shared::settle`] (hold and release dependents) → [`Shared::finish`] (commit, or put
/// the records back and fail; rebuild the chains that differ; publish). A refusal simply
/// drops the `Change` before the first record changed.
pub(super) struct Change {
    before: HashMap<String, Status>,
    snapshot: Option<BTreeMap<String, Entry>>,
    /// The lifecycle events the change produced, published by `finish`.
    pub(super) events: Vec<LifecycleEvent>,
}

impl Change {
    /// A change of no record (an event's settings, records just read from storage):
    /// `finish` only rebuilds and publishes.
    pub(super) fn without_records() -> Change {
        Change {
            before: HashMap::new(),
            snapshot: None,
            events: Vec::new(),
        }
    }

    /// Takes the records as they are now as the write-through's baseline (they came from
    /// storage: only what changes from here on is written back).
    pub(super) fn rebase(&mut self, shared: &Shared, ctl: &Control) {
        self.snapshot = shared.snapshot(ctl);
    }
}

impl Shared {
    /// Starts a change of the records (see [`Change`]).
    pub(super) fn begin(&self, ctl: &Control) -> Change {
        Change {
            before: statuses(ctl),
            snapshot: self.snapshot(ctl),
            events: Vec::new(),
        }
    }

    /// Ends a change: writes the changed records through (on failure they are put back
    /// and nothing else happens), rebuilds the chains that differ, and publishes the new
    /// views and the change's events.
    pub(super) fn finish(&self, ctl: &mut Control, change: Change) -> Result<(), EngineError> {
        let Change {
            snapshot,
            mut events,
            ..
        } = change;
        self.commit(ctl, snapshot)?;
        self.rebuild(ctl, &mut events);
        self.publish(ctl, events);
        Ok(())
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, Control> {
        // Callbacks run under catch_unwind, so a poisoned lock can only come from a bug in
        // the engine itself; the data is still consistent between operations.
        self.control.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn publish(&self, ctl: &Control, events: Vec<LifecycleEvent>) {
        self.views.store(Arc::new(Views {
            entries: ctl.plugins.clone(),
            active: active_of(ctl),
        }));
        for ev in events {
            ev.log();
            // No subscriber is not an error.
            let _ = self.changes.send(ev);
        }
    }

    /// The records as they were, when a write-through will need them to roll back.
    pub(super) fn snapshot(&self, ctl: &Control) -> Option<BTreeMap<String, Entry>> {
        self.persistence.as_ref().map(|_| ctl.plugins.clone())
    }

    /// Writes the records that differ from `snapshot` through to storage; on failure puts
    /// the snapshot back, so that the operation changes nothing.
    pub(super) fn commit(
        &self,
        ctl: &mut Control,
        snapshot: Option<BTreeMap<String, Entry>>,
    ) -> Result<(), EngineError> {
        let (Some(persistence), Some(snapshot)) = (&self.persistence, snapshot) else {
            return Ok(());
        };
        let mut changes = Changeset::default();
        for (name, e) in &ctl.plugins {
            let old = snapshot.get(name);
            if old.is_none_or(|o| o.record != e.record || o.unloaded != e.unloaded) {
                changes.upserts.push(StoredRecord {
                    record: e.record.clone(),
                    version: old.map_or(0, |o| o.version),
                    unloaded: e.unloaded,
                });
            }
        }
        for (name, o) in &snapshot {
            if !ctl.plugins.contains_key(name) {
                changes.removals.push(StoredRecord {
                    record: o.record.clone(),
                    version: o.version,
                    unloaded: o.unloaded,
                });
            }
        }
        if changes.is_empty() {
            return Ok(());
        }
        if let Err(e) = persistence.commit(&changes) {
            ctl.plugins = snapshot;
            return Err(EngineError::Persist(e));
        }
        for up in &changes.upserts {
            if let Some(e) = ctl.plugins.get_mut(&up.record.name) {
                e.version = up.version + 1;
            }
        }
        Ok(())
    }

    pub(super) fn failed_op(&self, op: Op, plugin: Option<&str>, error: &EngineError) {
        let ev = LifecycleEvent::OperationFailed {
            op,
            plugin: plugin.map(str::to_owned),
            error: error.to_string(),
        };
        ev.log();
        let _ = self.changes.send(ev);
    }

    pub(super) fn note_spawn(&self, event: &str, spawned: Spawned) {
        if spawned == Spawned::Dropped {
            let total = self.background.dropped();
            let ev = LifecycleEvent::BackgroundDropped {
                event: event.to_owned(),
                total,
            };
            ev.log();
            let _ = self.changes.send(ev);
        }
    }

    /// The failure path of a call: publish, and past the threshold hand the stop to the
    /// stopper thread (the call itself never takes the control lock or writes).
    pub(crate) fn plugin_failed(
        self: &Arc<Self>,
        event: &str,
        plugin: &str,
        stats: &Arc<crate::chain::Stats>,
        failure: &Failure,
        consecutive: u32,
    ) {
        let ev = LifecycleEvent::PluginFailed {
            plugin: plugin.to_owned(),
            event: event.to_owned(),
            failure: failure.clone(),
            consecutive,
        };
        ev.log();
        let _ = self.changes.send(ev);
        if self.threshold == 0 || consecutive < self.threshold {
            return;
        }
        self.stopper.submit(self, plugin, consecutive, stats);
    }

    /// Applies one lifecycle operation to its target, then settles dependencies and
    /// rebuilds the chains that changed. With `forced`, callbacks cannot refuse (the
    /// failure threshold stops a plugin whatever it says).
    pub(crate) fn operate(
        &self,
        target: Target<'_>,
        op: Op,
        forced: Option<Cause>,
    ) -> Result<Report, EngineError> {
        let result = self.operate_inner(target, op, forced);
        if let Err(e) = &result {
            let plugin = match target {
                Target::Plugin(p) => Some(p),
                _ => None,
            };
            self.failed_op(op, plugin, e);
        }
        result
    }

    pub(super) fn operate_inner(
        &self,
        target: Target<'_>,
        op: Op,
        forced: Option<Cause>,
    ) -> Result<Report, EngineError> {
        let _g = ControlGuard::enter(op)?;
        let mut ctl = self.lock();
        let names: Vec<String> = match target {
            Target::Plugin(name) => {
                if !ctl.plugins.contains_key(name) {
                    return Err(EngineError::UnknownPlugin(name.to_owned()));
                }
                vec![name.to_owned()]
            }
            Target::Event(event) => {
                let names: Vec<String> = ctl
                    .plugins
                    .values()
                    .filter(|e| e.record.event == event)
                    .map(|e| e.record.name.clone())
                    .collect();
                if names.is_empty() && !self.slots.load().by_name.contains_key(event) {
                    return Err(EngineError::UnknownEvent(event.to_owned()));
                }
                names
            }
            Target::All => ctl.plugins.keys().cloned().collect(),
        };
        let single = matches!(target, Target::Plugin(_));
        let mut change = self.begin(&ctl);
        let mut report = Report::default();
        let mut touched = Vec::new();
        let mut removed = Vec::new();
        if let (Some(Cause::FailureThreshold { .. }), Target::Plugin(name)) = (&forced, target) {
            // The stop was decided on a failure streak; if an operator has since restarted
            // the plugin (which resets the streak), it no longer applies.
            let streak = ctl
                .plugins
                .get(name)
                .map_or(0, |e| e.stats.consecutive.load(Relaxed));
            if streak < self.threshold {
                return Ok(Report::default());
            }
        }
        for name in names {
            match apply(
                &mut ctl,
                &name,
                op,
                forced.is_some(),
                &mut change.events,
                &mut removed,
            ) {
                Ok(true) => touched.push(name),
                Ok(false) => {}
                Err(e) if single => return Err(e),
                Err(e) => report.skipped.push((name, e)),
            }
        }
        let cause = forced.unwrap_or(Cause::Operator { op });
        self.settle(
            &mut ctl,
            &mut change,
            &touched,
            Some(cause),
            Cause::DependenciesUp,
        );
        report.overridden = change
            .events
            .iter()
            .filter_map(|ev| match ev {
                LifecycleEvent::CallbackOverridden { plugin, reason, .. } => {
                    Some((plugin.clone(), reason.clone()))
                }
                _ => None,
            })
            .collect();
        self.finish(&mut ctl, change)?;
        report.changed = touched
            .iter()
            .filter_map(|n| ctl.plugins.get(n).map(|e| e.record.clone()))
            .chain(removed)
            .collect();
        Ok(report)
    }

    /// Holds plugins whose hard dependencies are not active and releases held ones whose
    /// dependencies are, then reports every status that differs from `before`.
    pub(super) fn settle(
        &self,
        ctl: &mut Control,
        change: &mut Change,
        touched: &[String],
        cause: Option<Cause>,
        fallback: Cause,
    ) {
        let (before, events) = (&change.before, &mut change.events);
        let active = active_of(ctl);
        let now = OffsetDateTime::now_utc();
        let mut moved: Vec<(String, Status, Cause)> = Vec::new();
        for (name, e) in &ctl.plugins {
            if e.unloaded
                || (e.code.is_none() && !ctl.records_only && !ctl.booting)
                || !e.record.status.wants_to_run()
            {
                continue;
            }
            let waiting = waiting_for(&e.record, &active);
            match (e.record.status, waiting.first()) {
                (Status::Started | Status::Restarted, Some(dep)) => moved.push((
                    name.clone(),
                    Status::Held,
                    Cause::DependencyDown {
                        dependency: dep.clone(),
                    },
                )),
                (Status::Held, None) => {
                    moved.push((name.clone(), Status::Restarted, Cause::DependenciesUp))
                }
                _ => {}
            }
        }
        let mut auto: HashMap<String, Cause> = HashMap::new();
        for (name, to, why) in moved {
            if let Some(e) = ctl.plugins.get_mut(&name) {
                e.record.status = to;
                e.record.updated_at = now;
            }
            auto.insert(name, why);
        }
        for (name, e) in &ctl.plugins {
            let from = before.get(name).copied();
            let to = e.record.status;
            let Some(from) = from else { continue };
            if from == to {
                continue;
            }
            // A hold or release computed here names its dependency, even for a plugin the
            // operation touched (`start` of a plugin whose dependency is down holds it).
            let why = match auto.get(name) {
                Some(why) => why.clone(),
                None if touched.contains(name) => cause
                    .clone()
                    .unwrap_or(Cause::Operator { op: Op::Register }),
                None => fallback.clone(),
            };
            events.push(LifecycleEvent::StatusChanged {
                plugin: name.clone(),
                event: e.record.event.clone(),
                from,
                to,
                cause: why,
            });
        }
    }

    /// Compiles each event's chain from the active plugins and swaps in those that changed.
    pub(super) fn rebuild(&self, ctl: &mut Control, events: &mut Vec<LifecycleEvent>) {
        let active = active_of(ctl);
        let mut per_event: HashMap<&str, Vec<&PluginRecord>> = HashMap::new();
        for e in ctl.plugins.values() {
            if active.contains(&e.record.name) && e.record.status.is_active() {
                per_event
                    .entry(e.record.event.as_str())
                    .or_default()
                    .push(&e.record);
            }
        }
        let slots = self.slots.load();
        let mut updates = Vec::new();
        for (event, slot) in &slots.by_name {
            let members = per_event
                .get(event.as_str())
                .map(Vec::as_slice)
                .unwrap_or(&[]);
            let plan: Vec<PlanStep> = chain_order(members)
                .into_iter()
                .filter_map(|r| {
                    let e = ctl.plugins.get(&r.name)?;
                    Some(PlanStep {
                        name: e.name.clone(),
                        code: e.code.clone()?,
                        stats: e.stats.clone(),
                    })
                })
                .collect();
            let policy = ctl
                .policies
                .get(event)
                .copied()
                .unwrap_or(self.default_policy);
            let profiling = ctl.profiling.contains(event);
            let unchanged = match ctl.installed.get(event) {
                Some(i) => i.same(&plan, policy, profiling),
                None => plan.is_empty() && policy == self.default_policy && !profiling,
            };
            if unchanged {
                continue;
            }
            slot.install(&plan, policy, profiling);
            events.push(LifecycleEvent::ChainRebuilt {
                event: event.clone(),
                plugins: plan.iter().map(|p| p.name.to_string()).collect(),
            });
            updates.push((
                event.clone(),
                Installed {
                    steps: plan.into_iter().map(|p| (p.name, p.code)).collect(),
                    policy,
                    profiling,
                },
            ));
        }
        for (event, installed) in updates {
            ctl.installed.insert(event, installed);
        }
    }
}

/// Applies `op` to one plugin. Returns whether anything changed; an error changes nothing.
pub(super) fn apply(
    ctl: &mut Control,
    name: &str,
    op: Op,
    forced: bool,
    events: &mut Vec<LifecycleEvent>,
    removed: &mut Vec<PluginRecord>,
) -> Result<bool, EngineError> {
    let records_only = ctl.records_only;
    let Some(entry) = ctl.plugins.get_mut(name) else {
        return Err(EngineError::UnknownPlugin(name.to_owned()));
    };
    let from = entry.record.status;
    // Starting, enabling or restarting a deleted plugin brings its code back.
    let back = entry.unloaded && matches!(op, Op::Start | Op::Enable | Op::Restart);
    let to = match (op, from) {
        (Op::Start | Op::Restart, Status::Stopped) => {
            return Err(EngineError::Stopped(name.to_owned()));
        }
        (Op::Start | Op::Enable, Status::Started | Status::Restarted) if back => None,
        (Op::Start | Op::Enable, Status::Started | Status::Restarted) => return Ok(false),
        (Op::Start | Op::Enable | Op::Restart, Status::Registered) => Some(Status::Started),
        (Op::Start | Op::Enable, Status::Held) => Some(Status::Started),
        (Op::Enable, Status::Stopped) | (Op::Restart, _) => Some(Status::Restarted),
        (Op::Stop, Status::Stopped) => return Ok(false),
        (Op::Stop, _) => Some(Status::Stopped),
        (Op::Delete, _) if entry.unloaded || (entry.code.is_none() && !records_only) => {
            return Ok(false);
        }
        (Op::Delete | Op::Unregister, _) => None,
        (Op::Register, _) => return Ok(false),
    };
    // A plugin that never ran is started, not restarted, whatever the operation's name.
    let callback = if from == Status::Registered && op == Op::Restart {
        Op::Start
    } else {
        op
    };
    if back {
        entry.unloaded = false;
        if entry.code.is_none() {
            entry.code = entry.parked.take();
        }
        events.push(LifecycleEvent::Undeleted {
            plugin: name.to_owned(),
            event: entry.record.event.clone(),
        });
    }
    if let Some(code) = &entry.code
        && let Err(reason) = code.lifecycle(callback, &entry.record)
    {
        // A plugin may refuse to start, but never to be taken out: the operator (or the
        // failure threshold) wins, and the refusal is reported.
        if !forced && !op.takes_out() {
            if back {
                entry.parked = entry.code.take();
                entry.unloaded = true;
                events.pop();
            }
            return Err(EngineError::Refused {
                plugin: name.to_owned(),
                op,
                reason,
            });
        }
        events.push(LifecycleEvent::CallbackOverridden {
            plugin: name.to_owned(),
            event: entry.record.event.clone(),
            op,
            reason: reason.to_string(),
        });
    }
    match op {
        Op::Delete => {
            // Set aside, not dropped: `start` brings it back without a new registration.
            entry.parked = entry.code.take();
            entry.unloaded = true;
            events.push(LifecycleEvent::Deleted {
                plugin: name.to_owned(),
                event: entry.record.event.clone(),
            });
        }
        Op::Unregister => {
            let event = entry.record.event.clone();
            if let Some(gone) = ctl.plugins.remove(name) {
                removed.push(gone.record);
            }
            events.push(LifecycleEvent::Unregistered {
                plugin: name.to_owned(),
                event,
            });
        }
        _ => {
            if let Some(to) = to {
                entry.record.status = to;
                entry.record.updated_at = OffsetDateTime::now_utc();
            }
            if matches!(op, Op::Start | Op::Enable | Op::Restart) {
                // An operator bringing a plugin back gives it a clean failure streak.
                entry.stats.consecutive.store(0, Relaxed);
            }
        }
    }
    Ok(true)
}
