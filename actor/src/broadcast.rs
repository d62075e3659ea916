//! The actor side of the weight broadcast: chunks of a `WatchWeights` stream reassembled
//! into whole, checksum-verified versions of the student (the learner side is
//! `learner::broadcast`). The compute thread swaps them in between rollouts.

use std::time::Instant;

use bytes::Bytes;
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
    pub blob: Bytes,
    /// From the first chunk to the last.
    pub sync_seconds: f64,
}

impl Weights {
    /// Parses and verifies the checkpoint inside.
    pub fn checkpoint(&self) -> Result<Checkpoint, CheckpointError> {
        Checkpoint::from_bytes(&self.blob, &format!("weights version {}", self.version))
    }
}

/// A version being reassembled: its first chunk's header, the bytes so far and their
/// running CRC32 (each chunk is hashed as it is copied, while it is in cache).
#[derive(Debug)]
struct Partial {
    head: WeightChunk,
    buf: Vec<u8>,
    crc: crc32fast::Hasher,
    started: Instant,
}

/// Reassembles a weight stream's chunks into verified versions. A version sent as one
/// chunk is taken as it arrived, without a copy.
#[derive(Debug, Default)]
pub struct Assembler {
    current: Option<Partial>,
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
            self.current = None;
            if c.data.len() as u64 == c.total_len {
                let started = Instant::now();
                let crc = crc32fast::hash(&c.data);
                return verified(c.version, c.step, &c.checksum, crc, c.data, started).map(Some);
            }
            let head = WeightChunk {
                data: Bytes::new(),
                ..c.clone()
            };
            self.current = Some(Partial {
                buf: Vec::with_capacity(c.total_len as usize),
                head,
                crc: crc32fast::Hasher::new(),
                started: Instant::now(),
            });
        }
        let Some(mut p) = self.current.take() else {
            return Err(Status::data_loss("weight chunk without its beginning"));
        };
        if c.version != p.head.version || c.offset != p.buf.len() as u64 {
            return Err(Status::data_loss(format!(
                "weight chunk out of order (version {} offset {}, expected version {} offset {})",
                c.version,
                c.offset,
                p.head.version,
                p.buf.len()
            )));
        }
        if p.buf.len() as u64 + c.data.len() as u64 > p.head.total_len {
            return Err(Status::data_loss("weight chunks longer than announced"));
        }
        p.buf.extend_from_slice(&c.data);
        p.crc.update(&c.data);
        if (p.buf.len() as u64) < p.head.total_len {
            self.current = Some(p);
            return Ok(None);
        }
        let (h, crc) = (p.head, p.crc.finalize());
        verified(
            h.version,
            h.step,
            &h.checksum,
            crc,
            Bytes::from(p.buf),
            p.started,
        )
        .map(Some)
    }
}

/// The whole version, if its CRC32 `crc` is the one announced.
fn verified(
    version: u64,
    step: u64,
    announced: &str,
    crc: u32,
    blob: Bytes,
    started: Instant,
) -> Result<Weights, Status> {
    let sum = format!("{crc:08x}");
    if sum != announced {
        return Err(Status::data_loss(format!(
            "weights version {version}: checksum {sum}, announced {announced}"
        )));
    }
    Ok(Weights {
        version,
        step,
        blob,
        sync_seconds: started.elapsed().as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    const MAX: u64 = 1 << 20;

    /// A blob whose bytes differ from chunk to chunk (a misplaced chunk changes the CRC).
    fn blob(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 8) as u8)
            .collect()
    }

    /// `blob` as the learner streams it: chunks of `size` bytes (the last may be shorter),
    /// each naming the version, step, offset, total length and the whole blob's CRC32.
    fn chunks(version: u64, step: u64, blob: &[u8], size: usize) -> Vec<WeightChunk> {
        let checksum = format!("{:08x}", crc32fast::hash(blob));
        let chunk = |offset: usize, data: &[u8]| WeightChunk {
            version,
            step,
            offset: offset as u64,
            total_len: blob.len() as u64,
            checksum: checksum.clone(),
            data: data.to_vec().into(),
        };
        if blob.is_empty() {
            return vec![chunk(0, &[])];
        }
        blob.chunks(size)
            .enumerate()
            .map(|(i, data)| chunk(i * size, data))
            .collect()
    }

    /// Pushes every chunk; all but the last must be taken without producing weights.
    fn push_all(a: &mut Assembler, cs: Vec<WeightChunk>) -> Result<Option<Weights>, Status> {
        let n = cs.len();
        for (i, c) in cs.into_iter().enumerate() {
            let r = a.push(c, MAX);
            if i + 1 == n {
                return r;
            }
            assert!(
                matches!(r, Ok(None)),
                "chunk {i} of {n}: {:?}",
                r.map(|w| w.map(|w| w.version))
            );
        }
        unreachable!("no chunks")
    }

    fn refused(r: Result<Option<Weights>, Status>) -> Status {
        match r {
            Err(e) => e,
            Ok(w) => panic!("accepted: {:?}", w.map(|w| (w.version, w.blob.len()))),
        }
    }

    /// Streams a fresh version through `a` and checks it comes out whole: the assembler
    /// is usable again.
    fn assert_recovers(a: &mut Assembler, version: u64) {
        let b = blob(3000, version as u8);
        let w = push_all(a, chunks(version, 10 * version, &b, 1024))
            .unwrap()
            .expect("a whole version");
        assert_eq!((w.version, w.step), (version, 10 * version));
        assert_eq!(w.blob, b);
    }

    #[test]
    fn the_client_limit_admits_the_weights_of_every_preset() {
        // The `base` preset's weights are tens of MiB; the limit leaves room for far more.
        let b = blob(8 << 20, 9);
        let mut a = Assembler::default();
        let mut last = None;
        for c in chunks(1, 1, &b, 1 << 20) {
            last = a.push(c, MAX_WEIGHT_BYTES).unwrap();
        }
        assert_eq!(last.map(|w| w.blob.len()), Some(8 << 20));
    }

    #[test]
    fn chunks_reassemble_into_the_same_bytes_version_and_step() {
        let mut a = Assembler::default();
        for (version, len, size) in [
            (1, 10_000, 777),  // uneven: a short last chunk
            (2, 4096, 1024),   // exact multiple
            (3, 500, 1 << 20), // one chunk
            (4, 0, 1024),      // empty blob, one empty chunk
        ] {
            let b = blob(len, version as u8);
            let cs = chunks(version, 100 + version, &b, size);
            let w = push_all(&mut a, cs)
                .unwrap()
                .expect("the last chunk completes the version");
            assert_eq!(w.version, version);
            assert_eq!(w.step, 100 + version);
            assert_eq!(w.blob.len(), len);
            assert_eq!(w.blob, b, "version {version}");
            assert!(w.sync_seconds >= 0.0 && w.sync_seconds.is_finite());
        }
        // A blob of exactly `max_bytes` is within the limit.
        let b = blob(4096, 9);
        let w = a.push(chunks(5, 0, &b, 4096).remove(0), 4096).unwrap();
        assert_eq!(w.map(|w| w.blob), Some(b.into()));
    }

    /// A version sent as one chunk is the chunk's own bytes (no copy), and equals what
    /// the same blob gives when it arrives in pieces and is copied together.
    #[test]
    fn a_version_in_one_chunk_is_taken_as_it_arrived() {
        let b = blob(5000, 3);
        let whole = chunks(1, 1, &b, 1 << 20).remove(0);
        let arrived = whole.data.as_ptr();
        let mut a = Assembler::default();
        let one = a
            .push(whole, MAX)
            .unwrap()
            .expect("one chunk is a whole version");
        assert_eq!(one.blob.as_ptr(), arrived, "the blob was copied");
        let pieces = push_all(&mut a, chunks(2, 1, &b, 700))
            .unwrap()
            .expect("a whole version");
        assert_ne!(pieces.blob.as_ptr(), one.blob.as_ptr());
        assert_eq!(one.blob, pieces.blob);
        assert_eq!(one.blob, b);
        // A corrupted single chunk is refused like any other.
        let mut bad = chunks(3, 1, &b, 1 << 20).remove(0);
        let mut data = bad.data.to_vec();
        data[17] ^= 1;
        bad.data = data.into();
        assert_eq!(refused(a.push(bad, MAX)).code(), Code::DataLoss);
    }

    #[test]
    fn a_corrupted_chunk_is_data_loss_and_yields_no_weights() {
        let b = blob(5000, 1);
        // One byte flipped in each chunk in turn: first, middle, last.
        for (i, byte) in [(0, 0), (2, 500), (4, 999)] {
            let mut a = Assembler::default();
            let mut cs = chunks(7, 70, &b, 1000);
            let mut data = cs[i].data.to_vec();
            data[byte] ^= 0x01;
            cs[i].data = data.into();
            let e = refused(push_all(&mut a, cs));
            assert_eq!(e.code(), Code::DataLoss, "chunk {i}: {e:?}");
            assert!(e.message().contains("checksum"), "{e:?}");
            // Nothing of the damaged version is kept: its chunks lead nowhere now.
            let e = refused(a.push(chunks(7, 70, &b, 1000).remove(1), MAX));
            assert_eq!(e.code(), Code::DataLoss, "{e:?}");
            assert_recovers(&mut a, 8);
        }
        // The announced checksum is what is compared: right bytes, wrong checksum.
        let mut a = Assembler::default();
        let mut cs = chunks(7, 70, &b, 1000);
        for c in &mut cs {
            c.checksum = "00000000".into();
        }
        assert_eq!(refused(push_all(&mut a, cs)).code(), Code::DataLoss);
    }

    #[test]
    fn chunks_out_of_order_are_refused() {
        let b = blob(4000, 2);
        let v1 = chunks(1, 10, &b, 1000);

        // A gap: the second chunk is skipped.
        let mut a = Assembler::default();
        a.push(v1[0].clone(), MAX).unwrap();
        let e = refused(a.push(v1[2].clone(), MAX));
        assert_eq!(e.code(), Code::DataLoss, "{e:?}");
        assert!(e.message().contains("out of order"), "{e:?}");
        assert_recovers(&mut a, 2);

        // A chunk repeated.
        let mut a = Assembler::default();
        a.push(v1[0].clone(), MAX).unwrap();
        a.push(v1[1].clone(), MAX).unwrap();
        let e = refused(a.push(v1[1].clone(), MAX));
        assert_eq!(e.code(), Code::DataLoss, "{e:?}");
        assert_recovers(&mut a, 2);

        // A chunk of another version mid-stream, at the offset expected next.
        let v2 = chunks(2, 20, &blob(4000, 3), 1000);
        let mut a = Assembler::default();
        a.push(v1[0].clone(), MAX).unwrap();
        let e = refused(a.push(v2[1].clone(), MAX));
        assert_eq!(e.code(), Code::DataLoss, "{e:?}");
        assert!(e.message().contains("out of order"), "{e:?}");
        assert_recovers(&mut a, 3);

        // A continuation without its first chunk: on a fresh assembler, and right after
        // a version completed.
        let mut a = Assembler::default();
        let e = refused(a.push(v1[1].clone(), MAX));
        assert_eq!(e.code(), Code::DataLoss, "{e:?}");
        assert!(e.message().contains("without its beginning"), "{e:?}");
        assert_recovers(&mut a, 4);
        let e = refused(a.push(v1[1].clone(), MAX));
        assert_eq!(e.code(), Code::DataLoss, "{e:?}");
        assert_recovers(&mut a, 5);
    }

    #[test]
    fn chunks_longer_than_announced_are_refused() {
        // One chunk carrying more than the announced total.
        let mut a = Assembler::default();
        let mut c = chunks(1, 1, &blob(100, 4), 100).remove(0);
        c.data = [&c.data[..], &[0; 8]].concat().into();
        let e = refused(a.push(c, MAX));
        assert_eq!(e.code(), Code::DataLoss, "{e:?}");
        assert!(e.message().contains("longer than announced"), "{e:?}");
        assert_recovers(&mut a, 2);

        // The last chunk overrunning the total.
        let mut a = Assembler::default();
        let mut cs = chunks(1, 1, &blob(2500, 4), 1000);
        cs[2].data = [&cs[2].data[..], &[0; 600]].concat().into();
        let e = refused(push_all(&mut a, cs));
        assert_eq!(e.code(), Code::DataLoss, "{e:?}");
        assert_recovers(&mut a, 3);
    }

    #[test]
    fn a_blob_over_the_limit_is_out_of_range() {
        let mut a = Assembler::default();
        let b = blob(4097, 5);
        let e = refused(a.push(chunks(1, 1, &b, 1024).remove(0), 4096));
        assert_eq!(e.code(), Code::OutOfRange, "{e:?}");
        // Refused from the announcement, before any allocation of that size.
        let mut c = chunks(1, 1, &b, 1024).remove(0);
        c.total_len = u64::MAX;
        let e = refused(a.push(c, MAX_WEIGHT_BYTES));
        assert_eq!(e.code(), Code::OutOfRange, "{e:?}");
        // Nothing was started: the refused version's next chunk has no beginning.
        let e = refused(a.push(chunks(1, 1, &b, 1024).remove(1), 4096));
        assert_eq!(e.code(), Code::DataLoss, "{e:?}");
        assert_recovers(&mut a, 2);
    }

    #[test]
    fn a_new_version_from_offset_zero_replaces_an_unfinished_one() {
        // The learner moved on (a slow subscriber skips to the newest version): the
        // half-received version is dropped and the new one comes out whole.
        let mut a = Assembler::default();
        let v1 = chunks(1, 10, &blob(4000, 6), 1000);
        a.push(v1[0].clone(), MAX).unwrap();
        a.push(v1[1].clone(), MAX).unwrap();
        assert_recovers(&mut a, 2);
        // The old version's remaining chunks are refused afterwards.
        let e = refused(a.push(v1[2].clone(), MAX));
        assert_eq!(e.code(), Code::DataLoss, "{e:?}");
    }
}
