//! Streaming a job with its result (`AwaitResult`): the job first, then,
//! for a done job, the encrypted result in chunks.

use tonic::{Status, Streaming};

use crate::chunk::{Assembler, CHUNK_SIZE};
use crate::v1::job_result::Part;
use crate::v1::{Job, JobResult};

/// The job, then `result` (if any) in chunks of at most [`CHUNK_SIZE`]
/// bytes.
pub fn job_result_messages(job: Job, result: Option<&[u8]>) -> Vec<JobResult> {
    let mut messages = vec![JobResult { part: Some(Part::Job(job)) }];
    if let Some(result) = result {
        messages.extend(result.chunks(CHUNK_SIZE).map(|c| JobResult { part: Some(Part::Data(c.to_vec())) }));
    }
    messages
}

/// Reads the job an `AwaitResult` stream starts with.
pub async fn next_job(stream: &mut Streaming<JobResult>) -> Result<Job, Status> {
    match stream.message().await? {
        Some(JobResult { part: Some(Part::Job(job)) }) => Ok(job),
        _ => Err(Status::invalid_argument("an AwaitResult answer must start with the job")),
    }
}

/// Reads the rest of an `AwaitResult` stream: exactly `declared` bytes of
/// result (the job's `result_bytes`), refused over `limit`, on a second
/// job, or at any other size.
pub async fn collect_result(mut stream: Streaming<JobResult>, declared: u64, limit: u64) -> Result<Vec<u8>, Status> {
    let mut result = Assembler::new("encrypted result", declared, limit)?;
    while let Some(message) = stream.message().await? {
        match message.part {
            Some(Part::Data(data)) => result.push(&data)?,
            _ => return Err(Status::invalid_argument("an AwaitResult answer sent a second job")),
        }
    }
    Ok(result.finish()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_job_comes_first_then_the_result_in_chunks() {
        let result: Vec<u8> = (0..(CHUNK_SIZE + 5)).map(|i| i as u8).collect();
        let job = Job { job_id: "job-1".into(), result_bytes: result.len() as u64, ..Job::default() };
        let messages = job_result_messages(job.clone(), Some(&result));
        assert_eq!(messages.len(), 3);
        assert_eq!(messages[0].part, Some(Part::Job(job.clone())));
        let sent: Vec<u8> = messages[1..]
            .iter()
            .flat_map(|m| match &m.part {
                Some(Part::Data(d)) => d.clone(),
                _ => panic!("data after the job"),
            })
            .collect();
        assert_eq!(sent, result);
        assert_eq!(job_result_messages(job, None).len(), 1, "a job without a result is the job alone");
    }
}
