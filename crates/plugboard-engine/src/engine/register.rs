//! Registration: validating a plugin's record and code, checking for cycles, running its
//! `register` callback, and the upsert (the status is kept; a deletion outlives a boot).

use super::*;

impl Engine {
    /// Registers (or re-registers) a native plugin on event `E`.
    ///
    /// Registration is an upsert: the fields from code (priority, dependencies, extra) and
    /// the code itself replace the old ones; the runtime status is kept. A new plugin is
    /// `registered` and joins its chain once started.
    pub fn register<E: Event, P: Plugin<E>>(
        &self,
        registration: Registration,
        plugin: P,
    ) -> Result<PluginRecord, EngineError> {
        validate_name("plugin", &registration.name)?;
        self.typed_slot::<E>()?;
        self.register_code(E::NAME, registration, Code::native::<E, P>(plugin))
    }

    /// Registers (or re-registers) a native async plugin on event `E`.
    pub fn register_async<E: Event, P: AsyncPlugin<E>>(
        &self,
        registration: Registration,
        plugin: P,
    ) -> Result<PluginRecord, EngineError> {
        validate_name("plugin", &registration.name)?;
        self.typed_slot::<E>()?;
        self.register_code(E::NAME, registration, Code::native_async::<E, P>(plugin))
    }

    /// Registers (or re-registers) a wrapper on event `E`: it runs around the rest of the
    /// chain (see [`Wrapper`](crate::Wrapper)). Wrappers are ordered among themselves as
    /// plugins are; the first runs outermost.
    pub fn register_wrapper<E: Event, W: crate::wrap::Wrapper<E>>(
        &self,
        registration: Registration,
        wrapper: W,
    ) -> Result<PluginRecord, EngineError> {
        validate_name("plugin", &registration.name)?;
        self.typed_slot::<E>()?;
        self.register_code(E::NAME, registration, Code::wrapper::<E, W>(wrapper))
    }

    /// Registers (or re-registers) a collector on the collecting event `E`.
    pub fn register_collector<E: Collect, P: Collector<E>>(
        &self,
        registration: Registration,
        plugin: P,
    ) -> Result<PluginRecord, EngineError> {
        validate_name("plugin", &registration.name)?;
        self.collect_slot::<E>()?;
        let name: Arc<str> = Arc::from(registration.name.as_str());
        self.register_code(E::NAME, registration, Code::collector::<E, P>(name, plugin))
    }

    /// Registers (or re-registers) an async collector on the collecting event `E`.
    pub fn register_async_collector<E: Collect, P: AsyncCollector<E>>(
        &self,
        registration: Registration,
        plugin: P,
    ) -> Result<PluginRecord, EngineError> {
        validate_name("plugin", &registration.name)?;
        self.collect_slot::<E>()?;
        let name: Arc<str> = Arc::from(registration.name.as_str());
        self.register_code(
            E::NAME,
            registration,
            Code::async_collector::<E, P>(name, plugin),
        )
    }

    /// Registers a plugin that works on JSON on any declared event, by name. On a typed
    /// event the state is converted to JSON around this plugin's step only; on a
    /// collecting event it is given the input and replies its contribution (`null`: none;
    /// halt to end the collection).
    pub fn register_json<P: Plugin<Json>>(
        &self,
        event: &str,
        registration: Registration,
        plugin: P,
    ) -> Result<PluginRecord, EngineError> {
        self.register_code(event, registration, Code::json(plugin))
    }

    /// Registers prepared code (for hosts of other plugin kinds, such as WebAssembly).
    pub fn register_code(
        &self,
        event: &str,
        registration: Registration,
        code: Code,
    ) -> Result<PluginRecord, EngineError> {
        let name = registration.name.clone();
        let result = self.register_inner(event, registration, code);
        if let Err(e) = &result {
            self.shared.failed_op(Op::Register, Some(&name), e);
        }
        result
    }

    pub(super) fn register_inner(
        &self,
        event: &str,
        registration: Registration,
        code: Code,
    ) -> Result<PluginRecord, EngineError> {
        let _g = ControlGuard::enter(Op::Register)?;
        validate_name("plugin", &registration.name)?;
        for d in &registration.depends {
            validate_name("plugin", d)?;
        }
        let slot = self
            .slot(event)
            .map_err(|_| EngineError::UnknownEvent(event.to_owned()))?;
        if code.is_wrapper() && slot.info().mode == plugboard_core::Mode::Collect {
            return Err(EngineError::WrapperOnCollecting {
                plugin: registration.name,
                event: event.to_owned(),
            });
        }
        // JSON and encoded steps fit any event; native ones only their own.
        if code.state_type() != slot.state_type()
            && code.state_type() != TypeId::of::<Value>()
            && code.state_type() != TypeId::of::<crate::code::Encoded>()
        {
            return Err(EngineError::StateMismatch {
                plugin: registration.name,
                event: event.to_owned(),
                expected: slot.state_name().to_owned(),
                found: code.state_name().to_owned(),
            });
        }
        let mut ctl = self.shared.lock();
        let name = registration.name.clone();
        let others: BTreeMap<String, Vec<String>> = ctl
            .plugins
            .iter()
            .filter(|(n, _)| **n != name)
            .map(|(n, e)| (n.clone(), e.record.depends.clone()))
            .collect();
        if let Some(cycle) = find_cycle(&name, &registration.depends, &others) {
            return Err(EngineError::Cycle(cycle));
        }
        let now = OffsetDateTime::now_utc();
        let existing = ctl.plugins.get(&name);
        let mut record = PluginRecord {
            name: name.clone(),
            event: event.to_owned(),
            priority: registration.priority,
            status: existing.map_or(Status::Registered, |e| e.record.status),
            depend_type: registration.depend_type,
            depends: registration.depends,
            extra: registration.extra,
            inserted_at: existing.map_or(now, |e| e.record.inserted_at),
            updated_at: now,
        };
        // Registering the same fields again (every boot does) is not a change: keep the
        // timestamp, so that nothing needs writing.
        if let Some(e) = existing {
            let same = PluginRecord {
                updated_at: e.record.updated_at,
                ..record.clone()
            };
            if same == e.record {
                record.updated_at = e.record.updated_at;
            }
        }
        code.lifecycle(Op::Register, &record)
            .map_err(|reason| EngineError::Refused {
                plugin: name.clone(),
                op: Op::Register,
                reason,
            })?;
        let replaced = existing.is_some();
        let mut change = self.shared.begin(&ctl);
        // A deletion outlives a restart: at boot, registered code is set aside until an
        // operator starts the plugin again. Any other registration brings it back.
        let still_deleted = ctl.booting && existing.is_some_and(|e| e.unloaded);
        let (stats, version) = match ctl.plugins.get(&name) {
            Some(e) => {
                // New code starts with a clean failure streak.
                e.stats.consecutive.store(0, Relaxed);
                (e.stats.clone(), e.version)
            }
            None => (Arc::default(), 0),
        };
        ctl.plugins.insert(
            name.clone(),
            Entry {
                name: Arc::from(name.as_str()),
                record: record.clone(),
                code: (!still_deleted).then(|| code.clone()),
                stats,
                version,
                unloaded: still_deleted,
                parked: still_deleted.then_some(code),
            },
        );
        change
            .events
            .push(LifecycleEvent::Registered { record, replaced });
        // A host's registrations at boot neither hold nor release: `finish_boot` does, once,
        // on all the code registered, so that the order of registrations does not matter
        // and a record whose code never comes keeps its stored status. (A records-only
        // engine, such as the CLI's, never finishes a boot.)
        if !ctl.booting || ctl.records_only {
            self.shared.settle(
                &mut ctl,
                &mut change,
                &[],
                None,
                Cause::Operator { op: Op::Register },
            );
        }
        self.shared.finish(&mut ctl, change)?;
        Ok(ctl.plugins[&name].record.clone())
    }
}
