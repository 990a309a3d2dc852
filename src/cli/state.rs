//! `cardform state ...` and `cardform output`: arguments, dispatch to
//! `ops::state`, and what to show.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use super::Outcome;
use crate::model::Address;
use crate::ops;
use crate::render;
use crate::settings::{Overrides, Settings};

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// List recorded resources with their ids
    List,
    /// Show one resource's record
    Show { address: Address },
    /// Print the whole state as JSON
    Export,
    /// Replace the state with an export (refuses a foreign lineage or older serial unless --force)
    Import {
        file: PathBuf,
        #[arg(long)]
        force: bool,
    },
    /// Forget a resource (it stays at Alipay)
    Rm { address: Address },
    /// Clear the lock record left by a crashed run
    Unlock {
        #[arg(long, required = true)]
        force: bool,
    },
    /// Move the state to another backend (a postgres:// URL or a directory),
    /// lineage and serial kept; refuses a target that holds a state unless --force
    Migrate {
        /// Where the state goes: postgres://user@host/db?schema=NAME, or a directory
        #[arg(long, value_name = "URL|DIR")]
        to: String,
        /// Replace a state the target already holds
        #[arg(long)]
        force: bool,
    },
    /// Rebuild a damaged state from the backup saved after the last
    /// successful apply, listing what it cannot restore
    Recover {
        /// Replace a state that is not damaged too
        #[arg(long)]
        force: bool,
    },
    /// Record that this state belongs to this project and gateway (after a
    /// rename, or when the same gateway moved to a new address)
    Rebind {
        /// Project directory or manifest file [default: .]
        #[arg(value_name = "PATH", conflicts_with = "project")]
        path: Option<PathBuf>,
        #[arg(long, short = 'p', value_name = "PATH")]
        project: Option<PathBuf>,
        /// Set a `${var:NAME}` value (repeatable)
        #[arg(long = "var", value_name = "NAME=VALUE", value_parser = super::key_value)]
        vars: Vec<(String, String)>,
    },
}

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: Command,
    /// How long to wait for another run's state lock
    #[arg(long, value_parser = super::duration, default_value = "0s", global = true)]
    pub lock_timeout: Duration,
}

pub fn exec(args: Args, flags: &Overrides) -> Outcome {
    if let Command::Rebind {
        path,
        project,
        vars,
    } = &args.command
    {
        let project = path
            .as_ref()
            .or(project.as_ref())
            .cloned()
            .unwrap_or_else(|| PathBuf::from("."));
        let vars = vars.iter().cloned().collect();
        let (old, new) = ops::state::rebind(&project, &vars, flags, args.lock_timeout)?;
        match old {
            Some(old) if old == new => {
                render::line(&format!("The state already belongs to {new}."))
            }
            Some(old) => render::line(&format!(
                "The state belonged to {old}; it now belongs to {new}."
            )),
            None => render::line(&format!("The state now belongs to {new}.")),
        }
        return Ok(ExitCode::SUCCESS);
    }
    let dir = Settings::resolve(flags)?.state;
    let t = args.lock_timeout;
    match args.command {
        Command::List => {
            let snap = ops::state::snapshot(&dir, t)?;
            for r in snap.resources.values() {
                let id = r
                    .ids
                    .template_id
                    .as_deref()
                    .or(r.ids.image_id.as_deref())
                    .unwrap_or("-");
                render::line(&format!("{}\t{id}", r.address));
            }
            for i in snap.intents.values() {
                render::line(&format!(
                    "{}\t(interrupted create, request_id {})",
                    i.address, i.request_id
                ));
            }
        }
        Command::Show { address } => {
            let snap = ops::state::snapshot(&dir, t)?;
            match snap.resources.get(&address) {
                Some(r) => render::json(r),
                None => anyhow::bail!("`{address}` is not in the state"),
            }
        }
        Command::Export => render::json(&ops::state::snapshot(&dir, t)?),
        Command::Import { file, force } => {
            let serial = ops::state::import(&dir, t, &file, force)?;
            render::line(&format!(
                "Imported {}; state serial is now {serial}.",
                file.display()
            ));
        }
        Command::Rm { address } => {
            ops::state::remove(&dir, t, &address)?;
            render::line(&format!(
                "Removed {address} from the state (it stays at Alipay)."
            ));
        }
        Command::Rebind { .. } => unreachable!("handled above"),
        Command::Migrate { to, force } => {
            let to = crate::stores::Location::parse(&to).map_err(anyhow::Error::msg)?;
            let m = ops::state::migrate(&dir, &to, t, force)?;
            render::line(&format!(
                "Moved {} resource(s), {} intent(s), {} forgotten id(s) and {} card ledger row(s) from {} to {} (lineage {}, serial {}).",
                m.resources, m.intents, m.forgotten, m.ledger, dir, to, m.lineage, m.serial
            ));
            render::line(&format!(
                "The state at {dir} is left as it was; point --state or CARDFORM_STATE at {to} from now on."
            ));
        }
        Command::Recover { force } => {
            let r = ops::state::recover(&dir, force)?;
            render::line(&format!(
                "Recovered the state from {}: {} resource(s), serial {}. The damaged store is kept at {}.",
                r.backup, r.restored, r.serial, r.moved_to
            ));
            if !r.not_restored.is_empty() {
                render::note(&render::warning_text(&format!(
                    "Not restored ({}): the damaged store shows these, the backup does not. Check them at the gateway before applying:",
                    r.not_restored.len()
                )));
                for n in &r.not_restored {
                    render::note(&match n {
                        crate::state::backend::NotRestored::Ids(a, ids) => format!(
                            "  {a}{} (in the damaged store, not in the backup)",
                            render::progress::ids_text(a.kind, ids)
                        ),
                        crate::state::backend::NotRestored::InDoubt(a, request_id) => format!(
                            "  {a}: a create in doubt (request_id {request_id}); it may exist at Alipay"
                        ),
                    });
                }
            }
        }
        Command::Unlock { .. } => match ops::state::unlock(&dir)? {
            Some(i) => render::line(&format!(
                "Cleared the lock of `cardform {}` (pid {}) from {}.",
                i.operation, i.pid, i.since
            )),
            None => render::line("The state was not locked."),
        },
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, clap::Args)]
pub struct OutputArgs {
    /// The project whose state to read (its manifests may name the state,
    /// e.g. a `state: { url: { env: ... } }` block); without it, --state
    #[arg(long, short = 'p', value_name = "PATH")]
    pub project: Option<PathBuf>,
    #[command(flatten)]
    pub format: super::FormatArg,
    /// Write a QR code PNG per activation URL into this directory
    #[arg(long, value_name = "DIR")]
    pub qr: Option<PathBuf>,
    #[arg(long, value_parser = super::duration, default_value = "0s")]
    pub lock_timeout: Duration,
    /// Only these addresses (repeatable; globs)
    #[arg(long, value_name = "ADDRESS")]
    pub target: Vec<String>,
    /// Only these merchants (repeatable; globs)
    #[arg(long = "merchant", value_name = "GLOB")]
    pub merchants: Vec<String>,
    /// Leave out these merchants or addresses (repeatable; globs)
    #[arg(long, value_name = "GLOB")]
    pub exclude: Vec<String>,
}

pub fn exec_output(args: OutputArgs, flags: &Overrides) -> Outcome {
    let json = args
        .format
        .get("output", &[super::Format::Human, super::Format::Json])?
        == super::Format::Json;
    let dir = match &args.project {
        Some(p) => {
            let desired = ops::load::load(p, &Default::default())?;
            Settings::resolve_with(flags, &desired.gateway)?.state
        }
        None => Settings::resolve(flags)?.state,
    };
    let mut snap = ops::state::snapshot(&dir, args.lock_timeout)?;
    let select = crate::plan::Selection {
        merchants: args.merchants.clone(),
        exclude: args.exclude.clone(),
        targets: args.target.clone(),
    };
    if let Some(scope) = select.scope(&crate::model::Desired::default(), &snap)? {
        snap.resources.retain(|a, _| scope.addresses.contains(a));
    }
    let outputs = ops::state::outputs(&snap);
    if let Some(qr_dir) = &args.qr {
        let written = ops::state::write_qr_codes(qr_dir, &outputs)?;
        for (address, file) in &written {
            render::note(&format!("wrote {} ({address})", file.display()));
        }
        render::note(&format!(
            "Wrote {} QR code(s) to {}.",
            written.len(),
            qr_dir.display()
        ));
    }
    match json {
        true => render::json(&outputs),
        false => {
            for (merchant, ts) in &outputs {
                render::line(&format!("merchant.{merchant}"));
                for t in ts {
                    render::line(&format!(
                        "  {}  template_id={}",
                        t.address.name,
                        t.template_id.as_deref().unwrap_or("-")
                    ));
                    if let Some(u) = &t.apply_card_url {
                        render::line(&format!("    activation URL: {u}"));
                    }
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
