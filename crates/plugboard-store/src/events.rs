//! The event catalogue a host declared, kept so that other processes can describe it:
//! `plugboard events` runs in its own process and knows only the reference events, but an
//! embedder declares its own (`on_comment`) with their state's JSON Schema.

use plugboard_core::EventInfo;
use plugboard_engine::Engine;
use time::OffsetDateTime;

use crate::db::{on_db, transaction};
use crate::{Store, StoreError};

impl Store {
    /// Records every event `engine` declares (name, section, doc, the state's JSON
    /// Schema), replacing what was recorded under the same names; returns how many. A
    /// host calls it once its events are declared (`plugboard serve` and an embedder's
    /// `plugboard_server::Server` do it when they start).
    pub fn publish_events(&self, engine: &Engine) -> Result<usize, StoreError> {
        let events = engine.events();
        let n = events.len();
        let rows: Vec<(String, String, String, String)> = events
            .into_iter()
            .map(|e| {
                let schema =
                    serde_json::to_string(&stored_schema(&e)).map_err(|e| StoreError::Invalid {
                        field: "events.schema",
                        why: e.to_string(),
                    })?;
                Ok((
                    e.name.into_owned(),
                    e.section.into_owned(),
                    e.doc.into_owned(),
                    schema,
                ))
            })
            .collect::<Result<_, StoreError>>()?;
        self.run(move |db| async move {
            let now = OffsetDateTime::now_utc();
            transaction!(&db, |conn| async {
                for (name, section, doc, schema) in &rows {
                    sqlx::query(
                        "INSERT INTO events (name, section, doc, schema, updated_at) VALUES ($1, $2, $3, $4, $5) \
                         ON CONFLICT (name) DO UPDATE SET section = excluded.section, doc = excluded.doc, \
                         schema = excluded.schema, updated_at = excluded.updated_at",
                    )
                    .bind(name)
                    .bind(section)
                    .bind(doc)
                    .bind(schema)
                    .bind(now)
                    .execute(&mut *conn)
                    .await?;
                }
                Ok::<(), StoreError>(())
            })
        })?;
        Ok(n)
    }

    /// The events hosts on this database declared ([`Store::publish_events`]), by name.
    pub fn stored_events(&self) -> Result<Vec<EventInfo>, StoreError> {
        self.run(|db| async move {
            let rows: Vec<(String, String, String, String)> = on_db!(&db, |pool| {
                sqlx::query_as("SELECT name, section, doc, schema FROM events ORDER BY name")
                    .fetch_all(pool)
                    .await?
            });
            rows.into_iter()
                .map(|(name, section, doc, schema)| {
                    let schema =
                        serde_json::from_str(&schema).map_err(|e| StoreError::Corrupt {
                            table: "events",
                            why: format!("{name}: {e}"),
                        })?;
                    Ok(read_schema(EventInfo::dynamic(name, section, doc), schema))
                })
                .collect()
        })
    }
}

/// The keyword a collecting event's mode and contribution schema are kept under, inside
/// its state's schema (JSON Schema ignores keywords it does not know), so that the row
/// keeps one schema column.
const EXTENSION: &str = "x-plugboard";

fn stored_schema(e: &EventInfo) -> serde_json::Value {
    let mut schema = e.schema.clone();
    if let (Some(output), Some(obj)) = (&e.output, schema.as_object_mut()) {
        obj.insert(
            EXTENSION.to_owned(),
            serde_json::json!({ "mode": e.mode, "output": output }),
        );
    }
    schema
}

fn read_schema(info: EventInfo, mut schema: serde_json::Value) -> EventInfo {
    let ext = schema.as_object_mut().and_then(|o| o.remove(EXTENSION));
    let info = info.with_schema(schema);
    match ext.and_then(|x| x.get("output").cloned()) {
        Some(output) => info.collecting(output),
        None => info,
    }
}
