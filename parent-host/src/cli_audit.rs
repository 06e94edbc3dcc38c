//! `ekms audit`: verify, tail and export the enclave's audit log from a data dir (a running
//! appliance's, a stopped one's, or an offline copy).

use std::{path::PathBuf, process::ExitCode, time::Duration};

use anyhow::{Context as _, anyhow};
use ekms_wire::audit::AuditCheckpoint;

use crate::audit::{
    db::{AuditDb, StoredRecord},
    public_key_path,
    verify::{Report, verify},
};

/// `ekms audit` subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum AuditCommand {
    /// Check every record's hash chain and every signed checkpoint; exit 0 only when the log
    /// is intact, else name the first bad record.
    Verify(VerifyArgs),
    /// Print the newest records (JSON lines), and with --follow the new ones as they come.
    Tail(TailArgs),
    /// Export records (JSON lines, CloudTrail's field names) from a time on.
    Export(ExportArgs),
}

/// Arguments of `ekms audit verify`.
#[derive(clap::Args, Debug)]
pub struct VerifyArgs {
    /// The data dir (or a copy of it).
    #[arg(long, default_value = "./ekms-data")]
    pub data_dir: PathBuf,
    /// The running appliance (e.g. http://127.0.0.1:8400, from this machine): its enclave's
    /// current signed head is compared too, which detects dropped newest records.
    #[arg(long, value_name = "URL")]
    pub endpoint: Option<String>,
    /// The domain's audit public key (64 hex digits); default: DIR/audit-public-key.
    #[arg(long, value_name = "HEX")]
    pub public_key: Option<String>,
}

/// Arguments of `ekms audit tail`.
#[derive(clap::Args, Debug)]
pub struct TailArgs {
    /// The data dir.
    #[arg(long, default_value = "./ekms-data")]
    pub data_dir: PathBuf,
    /// How many of the newest records.
    #[arg(short = 'n', long, default_value_t = 10)]
    pub lines: usize,
    /// Keep printing new records.
    #[arg(short, long)]
    pub follow: bool,
}

/// Arguments of `ekms audit export`.
#[derive(clap::Args, Debug)]
pub struct ExportArgs {
    /// The data dir.
    #[arg(long, default_value = "./ekms-data")]
    pub data_dir: PathBuf,
    /// Records from this time on: RFC 3339 (`2026-12-01T10:00:00Z`) or a date (`2026-12-01`).
    #[arg(long, value_parser = parse_since)]
    pub since: Option<i64>,
    /// Write to this file instead of standard output.
    #[arg(long, short)]
    pub output: Option<PathBuf>,
}

fn parse_since(s: &str) -> Result<i64, String> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Ok(t.timestamp_millis());
    }
    chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc().timestamp_millis())
        .ok_or_else(|| format!("{s:?} is neither RFC 3339 (2026-12-01T10:00:00Z) nor a date"))
}

/// Runs an `ekms audit` command.
pub fn run(cmd: &AuditCommand) -> ExitCode {
    let result = match cmd {
        AuditCommand::Verify(a) => run_verify(a),
        AuditCommand::Tail(a) => run_tail(a).map(|()| ExitCode::SUCCESS),
        AuditCommand::Export(a) => run_export(a).map(|()| ExitCode::SUCCESS),
    };
    result.unwrap_or_else(|e| {
        eprintln!("ekms audit: {e:#}");
        ExitCode::from(2)
    })
}

fn open(data_dir: &std::path::Path) -> anyhow::Result<AuditDb> {
    Ok(AuditDb::open_read_only(data_dir)?)
}

fn run_verify(a: &VerifyArgs) -> anyhow::Result<ExitCode> {
    let key_hex = if let Some(k) = &a.public_key {
        k.clone()
    } else {
        let path = public_key_path(&a.data_dir);
        std::fs::read_to_string(&path)
            .with_context(|| format!("reading the audit public key {}", path.display()))?
    };
    let key = hex::decode(key_hex.trim())
        .ok()
        .filter(|k| k.len() == 32)
        .ok_or_else(|| anyhow!("the audit public key must be 64 hex digits"))?;
    let current = match &a.endpoint {
        Some(url) => Some(current_head(url)?),
        None => None,
    };
    let db = open(&a.data_dir)?;
    let mut report = verify(&db, &key, current.as_ref())?;
    if current.is_some() && !report.ok() {
        // Records the appliance answered a moment ago may still be on their way to the
        // store: look again once before calling them dropped.
        std::thread::sleep(Duration::from_secs(1));
        report = verify(&db, &key, current.as_ref())?;
    }
    print_report(&report, &db)?;
    Ok(if report.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn print_report(r: &Report, db: &AuditDb) -> anyhow::Result<()> {
    println!(
        "{} records in {} chains, {} checkpoints verified, {} records newer than the last \
         checkpoint",
        r.records, r.chains, r.checkpoints, r.unsigned
    );
    let Some(first) = r.first() else {
        println!("audit log intact");
        return Ok(());
    };
    match first.row {
        Some(row) => {
            let rec = db.records_after(row - 1, 1)?;
            println!("FIRST BAD RECORD: row {row}: {}", first.what);
            if let Some(r) = rec.first().filter(|r| r.id == row) {
                println!("  {}", r.record);
            }
        }
        None => println!("AUDIT LOG BROKEN: {}", first.what),
    }
    for p in r.problems.iter().filter(|p| *p != first) {
        match p.row {
            Some(row) => println!("also: row {row}: {}", p.what),
            None => println!("also: {}", p.what),
        }
    }
    Ok(())
}

/// The running enclave's current head, signed now (`GET /ekms/audit/head`).
fn current_head(endpoint: &str) -> anyhow::Result<AuditCheckpoint> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let v = rt.block_on(crate::http_client::get_json(endpoint, "/ekms/audit/head"))?;
    let field = |k: &str| -> anyhow::Result<Vec<u8>> {
        v.get(k)
            .and_then(serde_json::Value::as_str)
            .and_then(|s| hex::decode(s).ok())
            .ok_or_else(|| anyhow!("the appliance's head has no {k}"))
    };
    Ok(AuditCheckpoint {
        chain: field("chain")?,
        seq: v
            .get("seq")
            .and_then(serde_json::Value::as_u64)
            .ok_or_else(|| anyhow!("the appliance's head has no seq"))?,
        head: field("head")?,
        time_ms: v
            .get("time_ms")
            .and_then(serde_json::Value::as_i64)
            .unwrap_or_default(),
        public_key: field("public_key")?,
        signature: field("signature")?,
    })
}

/// The JSON of a checkpoint (what `GET /ekms/audit/head` answers).
#[must_use]
pub fn checkpoint_json(c: &AuditCheckpoint) -> serde_json::Value {
    serde_json::json!({
        "chain": hex::encode(&c.chain),
        "seq": c.seq,
        "head": hex::encode(&c.head),
        "time_ms": c.time_ms,
        "public_key": hex::encode(&c.public_key),
        "signature": hex::encode(&c.signature),
    })
}

fn print_all(out: &mut impl std::io::Write, records: &[StoredRecord]) -> anyhow::Result<()> {
    for r in records {
        writeln!(out, "{}", r.record)?;
    }
    out.flush()?;
    Ok(())
}

fn run_tail(a: &TailArgs) -> anyhow::Result<()> {
    let db = open(&a.data_dir)?;
    let mut after = if a.lines == 0 {
        db.newest()?.map_or(0, |r| r.id)
    } else {
        db.id_before_last(a.lines)?
    };
    let stdout = std::io::stdout();
    loop {
        let page = db.records_after(after, 1000)?;
        if let Some(last) = page.last() {
            after = last.id;
        }
        print_all(&mut stdout.lock(), &page)?;
        if !a.follow {
            return Ok(());
        }
        if page.is_empty() {
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

fn run_export(a: &ExportArgs) -> anyhow::Result<()> {
    let db = open(&a.data_dir)?;
    let mut after = match a.since {
        Some(t) => db.first_id_since(t)?,
        None => 0,
    };
    let mut out: Box<dyn std::io::Write> = match &a.output {
        Some(path) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout())),
    };
    let mut n = 0usize;
    loop {
        let page = db.records_after(after, 10_000)?;
        let Some(last) = page.last() else { break };
        after = last.id;
        n += page.len();
        print_all(&mut out, &page)?;
    }
    if a.output.is_some() {
        eprintln!("ekms audit: exported {n} records");
    }
    Ok(())
}
