//! `runnel bench ...`: throughput and latency measurements.

use anyhow::Result;
use clap::Subcommand;

#[derive(Subcommand, Debug)]
pub enum BenchCommand {}

pub async fn run(cmd: BenchCommand) -> Result<()> {
    match cmd {}
}
