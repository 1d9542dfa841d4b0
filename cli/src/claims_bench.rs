//! `jointscore bench claims`: the PostgreSQL store's cost per decision and
//! how fast workers claim, with no-op jobs (no parties, no evaluation):
//! accepting a job (its insert committed), claiming it under a lease, and
//! writing its end behind the lease's fence, with 1, 4 and 16 claimers,
//! each with a connection pool of its own as a worker process has.

use std::time::{Duration, Instant};

use clap::Args;
use jointscore_circuits::PlanKind;
use jointscore_coordinator::{Attestation, JobStore, NewJob, TestDatabase, Timings, Write};
use serde_json::json;

use crate::CliError;

#[derive(Args)]
pub(crate) struct ClaimsArgs {
    /// The PostgreSQL server (a schema is made for each run and dropped).
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/test")]
    store: String,
    /// Claimers run at once, one run per value.
    #[arg(long, value_delimiter = ',', default_value = "1,4,16")]
    claimers: Vec<usize>,
    /// No-op jobs per run.
    #[arg(long, default_value_t = 2000)]
    jobs: usize,
    /// Bytes of each job's result (a decision's is about 20 KB).
    #[arg(long, default_value_t = 20_000)]
    result_bytes: usize,
}

fn job(i: usize) -> NewJob {
    NewJob {
        request_id: format!("bench-{i}"),
        key_id: "k".into(),
        model_id: "m".into(),
        subject: format!("s-{i}"),
        plan: PlanKind::Pushdown,
        absent: Vec::new(),
        attestation: Attestation::default(),
    }
}

fn store_error(e: impl std::fmt::Display) -> CliError {
    CliError::Usage(format!("PostgreSQL: {e}"))
}

pub(crate) fn claims(args: ClaimsArgs) -> Result<(), CliError> {
    let mut runs = Vec::new();
    for &claimers in &args.claimers {
        let db = TestDatabase::create_at(&args.store, "bench_claims")
            .ok_or_else(|| CliError::Usage(format!("no PostgreSQL server at {}", args.store)))?;
        let store = db.open().map_err(store_error)?;
        // Accepting: one job insert per commit, as a front end's group
        // commit does under light load.
        let start = Instant::now();
        for i in 0..args.jobs {
            let new = job(i);
            let id = format!("job-bench-{i}");
            store.commit(&[&Write::InsertJob { job_id: id, job: new }]).map_err(store_error)?;
        }
        let insert = start.elapsed();
        let result = vec![7u8; args.result_bytes];
        let start = Instant::now();
        let handles: Vec<_> = (0..claimers)
            .map(|c| {
                let store = db.open();
                let result = result.clone();
                std::thread::spawn(move || -> Result<(usize, Duration, Duration), String> {
                    let store = store.map_err(|e| e.to_string())?;
                    let name = format!("claimer-{c}");
                    let (mut done, mut claiming, mut ending) = (0, Duration::ZERO, Duration::ZERO);
                    loop {
                        let t = Instant::now();
                        let Some(job) = store.claim_job(&name, 30_000).map_err(|e| e.to_string())? else { break };
                        claiming += t.elapsed();
                        let t = Instant::now();
                        store
                            .commit(&[
                                &Write::Fence { job_id: job.job_id.clone(), worker: name.clone() },
                                &Write::Complete {
                                    job_id: job.job_id,
                                    result: result.clone(),
                                    timings: Timings::default(),
                                    contributions: Vec::new(),
                                },
                            ])
                            .map_err(|e| e.to_string())?;
                        ending += t.elapsed();
                        done += 1;
                    }
                    Ok((done, claiming, ending))
                })
            })
            .collect();
        let (mut done, mut claiming, mut ending) = (0, Duration::ZERO, Duration::ZERO);
        for h in handles {
            let (d, c, e) = h.join().map_err(|_| CliError::Usage("a claimer panicked".into()))?.map_err(store_error)?;
            done += d;
            claiming += c;
            ending += e;
        }
        let wall = start.elapsed();
        if done != args.jobs {
            return Err(CliError::Usage(format!("{done} of {} jobs were claimed and ended", args.jobs)));
        }
        let per = |d: Duration| d.as_secs_f64() * 1e6 / args.jobs as f64;
        let run = json!({
            "claimers": claimers,
            "jobs": args.jobs,
            "accept_us_per_job": per(insert),
            "claim_us_per_job": per(claiming),
            "end_us_per_job": per(ending),
            "claimed_and_ended_per_s": args.jobs as f64 / wall.as_secs_f64(),
        });
        eprintln!("{run}");
        runs.push(run);
    }
    println!("{}", serde_json::to_string_pretty(&json!({ "store": "postgres", "runs": runs })).unwrap_or_default());
    Ok(())
}
