//! Who a block pays: the operator alone (`operator`), the miner that found it (`solo`), or
//! every miner in proportion to its work in the last shares (`pplns`), paid directly by
//! the block's coinbase.
//!
//! Under solo each miner's jobs carry a coinbase paying its own address, less the fee
//! ([`JobPayouts::for_finder`]); the job's own coinbase (everything to the operator) is
//! never handed out.
//!
//! Under PPLNS a payee is an account: the part of a worker name before the dot, paid to
//! the address the operator bound to it, or else to the account itself when it is an
//! address on the chain's network (an account with neither is carried as owed). Solo
//! miners' accounts are paid the same way. Every job's coinbase is split when the job is made ([`split`]), from
//! the ledger alone: the window's credited difficulty per account and the owed balances.
//! The window is the newest shares adding up to `window × network difficulty` of credited
//! difficulty, across every node of a cluster.

pub mod split;

use std::collections::{BTreeMap, HashMap};
use std::str::FromStr;
use std::sync::{Arc, Mutex, RwLock};

use bitcoin::address::NetworkUnchecked;
use bitcoin::{Address, Amount, Network, ScriptBuf, TxOut};
use serde::{Deserialize, Serialize};

use crate::accounting::account_of;
use crate::ledger::{Ledger, LedgerError};
use split::{Rules, Split, Standing};

/// The reward scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Scheme {
    /// Every block pays the payout address.
    Operator,
    /// Every block pays the address of the miner that found it, less the fee.
    Solo,
    /// Every block's coinbase pays the miners of the last shares, less the fee.
    Pplns,
}

impl Scheme {
    /// The name in flags, config and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Operator => "operator",
            Scheme::Solo => "solo",
            Scheme::Pplns => "pplns",
        }
    }
}

/// How blocks are paid.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RewardConfig {
    pub scheme: Scheme,
    /// The window, in multiples of the network difficulty.
    pub window: f64,
    pub rules: Rules,
}

/// A job's payouts: the split its coinbase pays, and what it was made from.
#[derive(Debug, Clone, PartialEq)]
pub struct JobPayouts {
    pub scheme: Scheme,
    /// The window's size in credited difficulty (0 unless `pplns`).
    pub window: f64,
    pub fee_bps: u32,
    /// Where the fee (and whatever no miner is paid) goes.
    pub operator: ScriptBuf,
    pub split: Split,
}

/// Whom a solo miner's coinbase pays: its account and the account's address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Payee {
    pub account: Arc<str>,
    pub script: ScriptBuf,
}

/// The widest output script an address pays to (P2WSH, P2TR: 34 bytes), one byte more,
/// and with a signature operation (P2PKH has one): a coinbase with it in place of a solo
/// miner's output is at least as large, in bytes, weight and sigops, as any miner's.
fn widest_script() -> ScriptBuf {
    let mut bytes = vec![0x21];
    bytes.extend_from_slice(&[0x02; 33]);
    bytes.push(bitcoin::opcodes::all::OP_CHECKSIG.to_u8());
    ScriptBuf::from_bytes(bytes)
}

impl JobPayouts {
    /// Everything to `operator`: the `operator` scheme.
    pub fn operator(value: Amount, operator: &ScriptBuf) -> JobPayouts {
        let rules = Rules {
            fee_bps: 0,
            dust: Amount::ZERO,
            max_outputs: 1,
        };
        JobPayouts {
            scheme: Scheme::Operator,
            window: 0.0,
            fee_bps: 0,
            operator: operator.clone(),
            split: split::split(value, &BTreeMap::new(), operator, rules),
        }
    }

    /// What a coinbase of `value` pays when `finder` mines it solo: the fee to the
    /// operator, the rest to the finder. Under any other scheme, these payouts.
    pub fn for_finder(&self, value: Amount, finder: &Payee) -> JobPayouts {
        if self.scheme != Scheme::Solo {
            return self.clone();
        }
        let standing = Standing {
            credit: 1.0,
            owed: 0,
            script: Some(finder.script.clone()),
        };
        let rules = Rules {
            fee_bps: self.fee_bps,
            dust: Amount::ZERO,
            max_outputs: 2,
        };
        JobPayouts {
            scheme: Scheme::Solo,
            window: 0.0,
            fee_bps: self.fee_bps,
            operator: self.operator.clone(),
            split: split::split(
                value,
                &BTreeMap::from([(finder.account.to_string(), standing)]),
                &self.operator,
                rules,
            ),
        }
    }

    /// The outputs of the widest coinbase a miner may be handed for this job: the split's,
    /// and under solo one more as wide as any address's.
    pub fn widest_outputs(&self) -> Vec<TxOut> {
        let mut outputs = self.split.outputs.clone();
        if self.scheme == Scheme::Solo {
            outputs.push(TxOut {
                value: Amount::ZERO,
                script_pubkey: widest_script(),
            });
        }
        outputs
    }
}

/// Why an address could not be bound.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// Not an address of the pool's network.
    #[error("{0}")]
    Address(String),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

/// The standings a job's split is made from, read from the ledger.
#[derive(Debug, Clone)]
pub struct Standings {
    scheme: Scheme,
    window: f64,
    payees: BTreeMap<String, Standing>,
}

/// Reads standings and splits rewards for the job sources.
pub struct Reward {
    config: RewardConfig,
    operator: ScriptBuf,
    network: Network,
    ledger: Arc<dyn Ledger>,
    /// The last standings read, used while the ledger cannot be read.
    last: Mutex<Option<Arc<Standings>>>,
    /// The addresses bound to accounts, as last read from the ledger (every job, so a
    /// cluster's nodes follow each other's bindings) or set through this node's API.
    bindings: RwLock<HashMap<String, ScriptBuf>>,
}

impl Reward {
    /// Pays per `config`, the operator's part to `operator`, payees on `network`.
    pub fn new(
        config: RewardConfig,
        operator: ScriptBuf,
        network: Network,
        ledger: Arc<dyn Ledger>,
    ) -> Reward {
        Reward {
            config,
            operator,
            network,
            ledger,
            last: Mutex::new(None),
            bindings: RwLock::new(HashMap::new()),
        }
    }

    /// Rereads the bound addresses from the ledger (keeping the last ones should it fail).
    pub async fn refresh_bindings(&self) {
        match self.ledger.bindings().await {
            Ok(stored) => {
                let bindings = stored
                    .into_iter()
                    .filter_map(|(account, address)| match self.script(&address) {
                        Ok(script) => Some((account, script)),
                        Err(reason) => {
                            tracing::warn!(%account, %reason, "ignoring a bound address");
                            None
                        }
                    })
                    .collect();
                *self.bindings.write().unwrap_or_else(|e| e.into_inner()) = bindings;
            }
            Err(err) => {
                tracing::warn!(%err, "cannot read the bound addresses; the last ones stand")
            }
        }
    }

    /// Binds `address` to `account` (or unbinds it, with `None`), in the ledger and here.
    ///
    /// # Errors
    /// An address that does not parse or is of another network, for the operator; or the
    /// ledger's failure.
    pub async fn bind(&self, account: &str, address: Option<&str>) -> Result<(), BindError> {
        let script = address
            .map(|address| self.script(address))
            .transpose()
            .map_err(BindError::Address)?;
        self.ledger.bind_address(account, address).await?;
        let mut bindings = self.bindings.write().unwrap_or_else(|e| e.into_inner());
        match script {
            Some(script) => bindings.insert(account.to_owned(), script),
            None => bindings.remove(account),
        };
        Ok(())
    }

    /// The script paying `address`, an address of our network.
    fn script(&self, address: &str) -> Result<ScriptBuf, String> {
        let excerpt: String = address.chars().take(100).collect();
        let parsed = Address::<NetworkUnchecked>::from_str(address)
            .map_err(|_| format!("{excerpt:?} is not a bitcoin address"))?;
        let network = self.network;
        let checked = parsed.require_network(network).map_err(|_| {
            format!(
                "{excerpt:?} is not an address of this pool's network ({})",
                network_name(network)
            )
        })?;
        Ok(checked.script_pubkey())
    }

    /// The address `account` is paid to, if any: bound, or the account itself.
    pub fn payout_address(&self, account: &str) -> Option<String> {
        let script = self.payout_script(account).ok()?;
        Address::from_script(&script, self.network)
            .ok()
            .map(|address| address.to_string())
    }

    /// Where `account` is paid: its bound address, or itself when it is an address.
    ///
    /// # Errors
    /// Why the account itself is not an address of our network.
    fn payout_script(&self, account: &str) -> Result<ScriptBuf, String> {
        let bound = self
            .bindings
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(account)
            .cloned();
        bound.map_or_else(|| self.script(account), Ok)
    }

    /// The standings for a job at `network_difficulty`: under PPLNS the window's credits
    /// and the owed balances (the last ones read, should the ledger fail).
    pub async fn standings(&self, network_difficulty: f64) -> Arc<Standings> {
        self.refresh_bindings().await;
        if self.config.scheme != Scheme::Pplns {
            return Arc::new(Standings {
                scheme: self.config.scheme,
                window: 0.0,
                payees: BTreeMap::new(),
            });
        }
        let window = self.config.window * network_difficulty;
        match self.read(window).await {
            Ok(standings) => {
                let standings = Arc::new(standings);
                *self.lock() = Some(standings.clone());
                standings
            }
            Err(err) => {
                tracing::warn!(%err, "cannot read the PPLNS window; the last split stands");
                self.lock().clone().unwrap_or_else(|| {
                    Arc::new(Standings {
                        scheme: Scheme::Pplns,
                        window,
                        payees: BTreeMap::new(),
                    })
                })
            }
        }
    }

    /// What a coinbase of `value` pays under `standings` (under solo: what it pays with no
    /// finder, everything to the operator; each miner is handed
    /// [`JobPayouts::for_finder`]).
    pub fn payouts(&self, standings: &Standings, value: Amount) -> JobPayouts {
        if standings.scheme == Scheme::Operator {
            return JobPayouts::operator(value, &self.operator);
        }
        JobPayouts {
            scheme: standings.scheme,
            window: standings.window,
            fee_bps: self.config.rules.fee_bps,
            operator: self.operator.clone(),
            split: split::split(value, &standings.payees, &self.operator, self.config.rules),
        }
    }

    /// The scheme blocks are paid by.
    pub fn scheme(&self) -> Scheme {
        self.config.scheme
    }

    /// Whom a solo miner of `account` is paid: the address bound to the account, or the
    /// account itself.
    ///
    /// # Errors
    /// Why the account cannot be paid, for the miner: not an address (and none bound), or
    /// one of another network.
    pub fn payee(&self, account: &str) -> Result<Payee, String> {
        let script = self
            .payout_script(account)
            .map_err(|reason| format!("solo mining pays the username's address: {reason}"))?;
        Ok(Payee {
            account: Arc::from(account),
            script,
        })
    }

    async fn read(&self, window: f64) -> Result<Standings, LedgerError> {
        let credits = self.ledger.window_credits(window).await?;
        let owed = self.ledger.owed(None).await?;
        let mut payees: BTreeMap<String, Standing> = BTreeMap::new();
        for (worker, credit) in credits.workers {
            let account = account_of(&worker);
            payees
                .entry(account.to_owned())
                .or_insert_with(|| self.standing(account))
                .credit += credit;
        }
        for (payee, sats) in owed {
            if sats != 0 {
                payees
                    .entry(payee.clone())
                    .or_insert_with(|| self.standing(&payee))
                    .owed = sats;
            }
        }
        Ok(Standings {
            scheme: Scheme::Pplns,
            window,
            payees,
        })
    }

    /// A payee with nothing yet, paid to its bound address or to itself when it is an
    /// address of our network.
    fn standing(&self, account: &str) -> Standing {
        Standing {
            credit: 0.0,
            owed: 0,
            script: self.payout_script(account).ok(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Arc<Standings>>> {
        self.last.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A network as miners name it.
fn network_name(network: Network) -> &'static str {
    match network {
        Network::Bitcoin => "mainnet",
        Network::Testnet => "testnet3",
        Network::Testnet4 => "testnet4",
        Network::Signet => "signet",
        Network::Regtest => "regtest",
    }
}
