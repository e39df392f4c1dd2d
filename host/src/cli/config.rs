//! `config [--set KEY=VALUE]... [--get KEY] [--list]`

use std::path::PathBuf;

use serde_json::json;

use crate::ops::{self, Context};

use super::{Finish, Output};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Set a key; repeat for several. All are validated before any is written.
    #[arg(long, value_name = "KEY=VALUE", value_parser = parse_assignment)]
    set: Vec<(String, String)>,
    /// Print one key's value.
    #[arg(long, value_name = "KEY", conflicts_with = "set")]
    get: Option<String>,
    /// List every key with its value and meaning (the default).
    #[arg(long, conflicts_with_all = ["set", "get"])]
    list: bool,
}

fn parse_assignment(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .ok_or_else(|| format!("'{s}' is not KEY=VALUE (e.g. limits.dailyTasks=10)"))
}

pub fn run(home: Option<PathBuf>, args: Args, out: &Output) -> anyhow::Result<Finish> {
    let mut ctx = Context::open(home)?;
    if !args.set.is_empty() {
        let changes = ops::config::set(&mut ctx, &args.set)?;
        out.emit(&json!({ "changes": changes }), |w| {
            if changes.is_empty() {
                writeln!(w, "nothing changed")?;
            }
            for c in &changes {
                writeln!(w, "{} = {} (was {})", c.key, c.to, c.from)?;
            }
            Ok(())
        })?;
    } else if let Some(key) = args.get {
        let value = ops::config::get(&ctx, &key)?;
        out.emit(&json!({ "key": key, "value": value }), |w| {
            writeln!(w, "{value}")
        })?;
    } else {
        list(&ctx, out)?;
    }
    Ok(Finish::Done)
}

fn list(ctx: &Context, out: &Output) -> anyhow::Result<()> {
    let entries = ops::config::list(ctx);
    out.emit(&entries, |w| {
        for e in &entries {
            let default = if e.value == e.default {
                String::new()
            } else {
                format!(" (default {})", e.default)
            };
            writeln!(w, "{} = {}{default}", e.key, e.value)?;
            writeln!(w, "    {} [{}]", e.description, e.kind)?;
        }
        Ok(())
    })
}
