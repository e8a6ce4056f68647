//! Storage: restoring records at boot, finishing a boot, and following the changes other
//! processes wrote (`sync_external`).

use super::*;

impl Engine {
    /// Loads stored records at boot, before the host registers its code. Records whose
    /// code is never registered stay known but are never called ("missing code"); see
    /// [`Engine::finish_boot`].
    pub fn restore(&self, records: Vec<StoredRecord>) -> Result<(), EngineError> {
        let _g = ControlGuard::enter(Op::Register)?;
        let mut ctl = self.shared.lock();
        ctl.booting = true;
        for stored in records {
            let name = stored.record.name.clone();
            match ctl.plugins.get_mut(&name) {
                Some(e) => {
                    e.record = stored.record;
                    e.version = stored.version;
                    e.unloaded = stored.unloaded;
                }
                None => {
                    ctl.plugins.insert(name.clone(), Entry::stored(stored));
                }
            }
        }
        // What was stored is what storage holds: nothing to write through.
        self.shared.finish(&mut ctl, Change::without_records())
    }

    /// Ends a boot: starts, once, every record still `registered` (a boot interrupted
    /// between registering and starting left it so), and reports the records whose code
    /// is missing.
    pub fn finish_boot(&self) -> Result<BootReport, EngineError> {
        {
            // From now on a record without code is missing: hold its dependents (once).
            let _g = ControlGuard::enter(Op::Start)?;
            let mut ctl = self.shared.lock();
            if ctl.booting {
                ctl.booting = false;
                let mut change = self.shared.begin(&ctl);
                self.shared
                    .settle(&mut ctl, &mut change, &[], None, Cause::DependenciesUp);
                if let Err(e) = self.shared.finish(&mut ctl, change) {
                    ctl.booting = true;
                    return Err(e);
                }
            }
        }
        let (registered, missing): (Vec<String>, Vec<(String, String)>) = {
            let views = self.shared.views.load();
            let registered = views
                .entries
                .values()
                .filter(|e| e.code.is_some() && e.record.status == Status::Registered)
                .map(|e| e.record.name.clone())
                .collect();
            let missing = views
                .entries
                .values()
                // Deleted on purpose is not missing.
                .filter(|e| e.code.is_none() && !e.unloaded)
                .map(|e| (e.record.name.clone(), e.record.event.clone()))
                .collect();
            (registered, missing)
        };
        let mut report = BootReport::default();
        for name in registered {
            match self.start(name.as_str()) {
                Ok(_) => report.started.push(name),
                Err(e) => report.failed.push((name, e.to_string())),
            }
        }
        for (plugin, event) in missing {
            let ev = LifecycleEvent::MissingCode {
                plugin: plugin.clone(),
                event,
            };
            ev.log();
            let _ = self.shared.changes.send(ev);
            report.missing_code.push(plugin);
        }
        Ok(report)
    }

    /// Applies records changed by another process sharing the storage: newer versions
    /// replace ours (code is kept; no callback runs), records gone from storage are
    /// removed, new ones are added. Dependents are then held or released here, where the
    /// code is, and those changes are written back. Returns whether anything changed.
    ///
    /// `load` reads the stored records; it runs under the engine's control lock, so that no
    /// local change can be committed between the read and its application (a record
    /// registered here in between would otherwise look deleted elsewhere).
    pub fn sync_external(
        &self,
        load: impl FnOnce() -> Result<Vec<StoredRecord>, String>,
    ) -> Result<bool, EngineError> {
        let _g = ControlGuard::enter(Op::Register)?;
        let mut ctl = self.shared.lock();
        let records = load().map_err(|e| EngineError::Persist(PersistError::Backend(e)))?;
        // If writing back the holds and releases fails, everything goes back to before the
        // stored records were applied, so that the next sync sees the difference again.
        let untouched = self
            .shared
            .persistence
            .as_ref()
            .map(|_| ctl.plugins.clone());
        // Statuses are reported from before the stored records were applied; what is
        // written back is only what differs from them once applied (see `rebase`).
        let mut change = self.shared.begin(&ctl);
        let events = &mut change.events;
        let mut changed = false;
        let mut seen = HashSet::new();
        for stored in records {
            let name = stored.record.name.clone();
            seen.insert(name.clone());
            match ctl.plugins.get_mut(&name) {
                // Storage is the truth: any other version (newer, or a row deleted and
                // created again elsewhere) replaces ours; the code is kept.
                Some(e) if stored.version != e.version => {
                    // An operator's start, restart or enable, wherever it was issued, gives
                    // the plugin a clean failure streak here too.
                    let running = |s: Status| matches!(s, Status::Started | Status::Restarted);
                    if running(stored.record.status)
                        && (e.record.status != stored.record.status
                            || e.record.updated_at != stored.record.updated_at)
                    {
                        e.stats.consecutive.store(0, Relaxed);
                    }
                    if stored.unloaded && !e.unloaded && e.code.is_some() {
                        // Deleted elsewhere: unload the code here too.
                        e.parked = e.code.take();
                        events.push(LifecycleEvent::Deleted {
                            plugin: name.clone(),
                            event: stored.record.event.clone(),
                        });
                    } else if !stored.unloaded && e.unloaded && e.code.is_none() {
                        // Registered again elsewhere: take the code back.
                        e.code = e.parked.take();
                    }
                    e.unloaded = stored.unloaded;
                    e.record = stored.record;
                    e.version = stored.version;
                    changed = true;
                }
                Some(_) => {}
                None => {
                    ctl.plugins.insert(name.clone(), Entry::stored(stored));
                    changed = true;
                }
            }
        }
        let gone: Vec<String> = ctl
            .plugins
            .values()
            .filter(|e| e.version > 0 && !seen.contains(&e.record.name))
            .map(|e| e.record.name.clone())
            .collect();
        for name in gone {
            if let Some(e) = ctl.plugins.remove(&name) {
                events.push(LifecycleEvent::Unregistered {
                    plugin: name,
                    event: e.record.event,
                });
                changed = true;
            }
        }
        if !changed {
            return Ok(false);
        }
        change.rebase(&self.shared, &ctl);
        self.shared
            .settle(&mut ctl, &mut change, &[], None, Cause::External);
        if let Err(e) = self.shared.finish(&mut ctl, change) {
            if let Some(untouched) = untouched {
                ctl.plugins = untouched;
            }
            return Err(e);
        }
        Ok(true)
    }

    /// Waits until every stop decided at the failure threshold has run (they run on a
    /// thread of the engine's own, off the call path), at most `timeout`; whether they all
    /// did. For orderly shutdowns and tests.
    pub fn wait_idle(&self, timeout: std::time::Duration) -> bool {
        self.shared.stopper.wait_idle(timeout)
    }

    /// Every record with its storage version, for storage tools.
    pub fn stored_records(&self) -> Vec<StoredRecord> {
        self.shared
            .views
            .load()
            .entries
            .values()
            .map(|e| StoredRecord {
                record: e.record.clone(),
                version: e.version,
                unloaded: e.unloaded,
            })
            .collect()
    }
}
