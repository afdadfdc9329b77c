use clap::Parser;
use quarry_miner::config::Cli;

fn main() -> anyhow::Result<()> {
    quarry_miner::run::run(Cli::parse().options)
}
