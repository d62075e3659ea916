//! The actor side of the weight broadcast: chunks of a `WatchWeights` stream reassembled
//! into whole, checksum-verified versions of the student (the learner side is
//! `learner::broadcast`). The compute thread swaps them in between rollouts.

use std::time::Instant;

use qd_proto::WeightChunk;
use tonic::Status;

use model::checkpoint::{Checkpoint, CheckpointError};

/// Largest weight blob a client accepts.
pub const MAX_WEIGHT_BYTES: u64 = 16 << 30;

/// One version of the student: checkpoint bytes whose checksum held.
#[derive(Debug)]
pub struct Weights {
    pub version: u64,
    pub step: u64,
    pub blob: Vec<u8>,
    /// From the first chunk to the last.
    pub sync_seconds: f64,
}

impl Weights {
    /// Parses and verifies the checkpoint inside.
    pub fn checkpoint(&self) -> Result<Checkpoint, CheckpointError> {
        Checkpoint::from_bytes(&self.blob, &format!("weights version {}", self.version))
    }
}

/// Reassembles a weight stream's chunks into verified versions.
#[derive(Debug, Default)]
pub struct Assembler {
    current: Option<(WeightChunk, Vec<u8>, Instant)>,
}

impl Assembler {
    /// Adds a chunk; returns a version when its last chunk arrived and its checksum holds.
    pub fn push(&mut self, c: WeightChunk, max_bytes: u64) -> Result<Option<Weights>, Status> {
        if c.offset == 0 {
            if c.total_len > max_bytes {
                return Err(Status::out_of_range(format!(
                    "weights of {} bytes exceed the {max_bytes}-byte limit",
                    c.total_len
                )));
            }
            let buf = Vec::with_capacity(c.total_len as usize);
            self.current = Some((c.clone(), buf, Instant::now()));
        }
        let Some((head, buf, started)) = self.current.as_mut() else {
            return Err(Status::data_loss("weight chunk without its beginning"));
        };
        if c.version != head.version || c.offset != buf.len() as u64 {
            return Err(Status::data_loss(format!(
                "weight chunk out of order (version {} offset {}, expected version {} offset {})",
                c.version,
                c.offset,
                head.version,
                buf.len()
            )));
        }
        buf.extend_from_slice(&c.data);
        if buf.len() as u64 > head.total_len {
            return Err(Status::data_loss("weight chunks longer than announced"));
        }
        if (buf.len() as u64) < head.total_len {
            return Ok(None);
        }
        let (head, buf, started) = (head.clone(), std::mem::take(buf), *started);
        self.current = None;
        let sum = format!("{:08x}", crc32fast::hash(&buf));
        if sum != head.checksum {
            return Err(Status::data_loss(format!(
                "weights version {}: checksum {sum}, announced {}",
                head.version, head.checksum
            )));
        }
        Ok(Some(Weights {
            version: head.version,
            step: head.step,
            blob: buf,
            sync_seconds: started.elapsed().as_secs_f64(),
        }))
    }
}
