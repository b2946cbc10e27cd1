//! How list and describe commands print: `--format text|json|yaml`
//! (`--json` is kept as a short form of `--format json`). Text is for
//! people; JSON and YAML print the same structure, for scripts.

use std::io::IsTerminal;

use anyhow::Result;
use clap::{Args, ValueEnum};
use serde::Serialize;

#[derive(ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Format {
    /// Tables and lines for people
    #[default]
    Text,
    /// One JSON document
    Json,
    /// One YAML document
    Yaml,
}

#[derive(Args, Clone, Debug, Default)]
pub struct FormatArgs {
    /// Output format
    #[arg(long, value_enum, value_name = "FORMAT")]
    pub format: Option<Format>,
    /// Print JSON (same as --format json)
    #[arg(long, conflicts_with = "format")]
    pub json: bool,
}

impl FormatArgs {
    pub fn get(&self) -> Format {
        match (self.format, self.json) {
            (Some(f), _) => f,
            (None, true) => Format::Json,
            (None, false) => Format::Text,
        }
    }
}

/// Prints `value` as JSON or YAML, or `text()` for `Format::Text`.
pub fn emit<T: Serialize>(format: Format, value: &T, text: impl FnOnce() -> String) -> Result<()> {
    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(value)?),
        Format::Yaml => print!("{}", serde_yaml::to_string(value)?),
        Format::Text => print!("{}", text()),
    }
    Ok(())
}

/// Whether stdout is a terminal (colours and other decoration only then).
pub fn stdout_is_terminal() -> bool {
    std::io::stdout().is_terminal()
}

/// `s` in bold red when stdout is a terminal, else as it is.
pub fn alert(s: &str) -> String {
    if stdout_is_terminal() && std::env::var_os("NO_COLOR").is_none() {
        format!("\x1b[1;31m{s}\x1b[0m")
    } else {
        s.to_string()
    }
}

/// Left-aligned columns two spaces apart (the last one unpadded).
pub fn table(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            if c + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<width$}  ", width = widths[c]));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}
