//! The `plugboard` command: a thin CLI over the `plugboard` library.
//!
//! `plugboard events` lists the event catalogue, `plugboard events show NAME` prints an
//! event's JSON Schema, and `plugboard demo` runs an in-process demo host.

mod demo;

use std::io::Write;

use anyhow::{Context as _, Result};
use clap::{Parser, Subcommand};
use plugboard::Engine;

/// Runtime plugins and event hooks for Rust applications.
#[derive(Parser)]
#[command(name = "plugboard", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// List the event catalogue, or show one event's state schema.
    Events {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        #[command(subcommand)]
        show: Option<EventsCommand>,
    },
    /// Run an in-process demo host: register sample plugins, call events, change
    /// statuses, and print each step.
    Demo,
}

#[derive(Subcommand)]
enum EventsCommand {
    /// Print the JSON Schema of an event's state.
    Show {
        /// The event's name, e.g. `on_user_after_save_failure`.
        name: String,
    },
}

fn main() -> Result<()> {
    match run() {
        // A closed pipe (`plugboard events | head`) is the reader's choice, not an error.
        Err(e)
            if e.downcast_ref::<std::io::Error>()
                .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe) =>
        {
            Ok(())
        }
        other => other,
    }
}

fn run() -> Result<()> {
    let cli = Cli::parse();
    // Lifecycle changes are traced at `info`; `RUST_LOG=plugboard=info` shows them.
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let mut out = std::io::stdout().lock();
    match cli.command {
        Command::Events {
            show: Some(EventsCommand::Show { name }),
            ..
        } => {
            let engine = Engine::new();
            let info = engine.event(&name).with_context(|| {
                format!("no event named `{name}`; `plugboard events` lists them")
            })?;
            writeln!(out, "{}", serde_json::to_string_pretty(&info.schema)?)?;
        }
        Command::Events { json, show: None } => {
            let events = Engine::new().events();
            if json {
                let list: Vec<_> = events
                    .iter()
                    .map(|e| {
                        serde_json::json!({
                            "name": e.name, "section": e.section, "doc": e.doc, "fields": e.fields(),
                        })
                    })
                    .collect();
                writeln!(out, "{}", serde_json::to_string_pretty(&list)?)?;
            } else {
                let width = events.iter().map(|e| e.name.len()).max().unwrap_or(0);
                writeln!(out, "{:width$}  {:9}  FIELDS", "EVENT", "SECTION")?;
                for e in &events {
                    let fields = e.fields();
                    let fields = if fields == ["data", "extra"] {
                        "(generic payload: data, extra)".to_owned()
                    } else {
                        fields.join(", ")
                    };
                    writeln!(out, "{:width$}  {:9}  {fields}", e.name, e.section)?;
                }
            }
        }
        Command::Demo => demo::run(&mut out)?,
    }
    Ok(())
}
