//! `quarry-load`: a load generator for Stratum V1 pools (see `quarry_tests::load`).

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    quarry_tests::load::run(quarry_tests::load::Cli::parse()).await
}
