//! qd's gRPC codec: prost's encoding, with a check of every message before it is
//! decoded of what decoding it could make the process allocate.
//!
//! tonic bounds a message's bytes on the wire (`max_decoding_message_size`), but
//! decoding can multiply them: an empty `Trajectory` is 2 bytes on the wire and a
//! 56-byte struct in memory, plus the spare capacity of the vector it is pushed to, so a
//! batch of empty trajectories decodes to about 50 times its size. Each message type
//! states its bound ([`Bounded`]): the fixed-shape ones a number of bytes, a
//! [`TrajectoryBatch`] what its decoding may allocate per byte on the wire, counted by
//! reading the wire format (without allocating) before prost decodes it.

use std::marker::PhantomData;

use prost::Message;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::Status;

use crate::{
    PushAck, RegisterRequest, RegisterResponse, Sample, StatusRequest, StatusResponse, Trajectory,
    TrajectoryBatch, WatchRequest, WeightChunk,
};

/// The largest `RegisterRequest`: its strings' limits (name 256 bytes, hashes 128, the
/// model config's JSON 16 KiB) and their tags, rounded up.
pub const MAX_REGISTER_BYTES: usize = 20 << 10;

/// What decoding a `TrajectoryBatch` may allocate per byte on the wire, above
/// [`DECODE_ALLOWANCE`]. An honest batch needs at most about 12 (a pair of one-token
/// samples); a batch of empty trajectories would need about 50.
pub const MAX_DECODE_RATIO: usize = 16;

/// Bytes any batch may allocate to decode, whatever its size on the wire.
pub const DECODE_ALLOWANCE: usize = 64 << 10;

/// A message type's bound on what decoding one message may allocate.
pub trait Bounded {
    /// Refuses `wire`, one whole encoded message, when decoding it could allocate more
    /// than the type allows; the status says why (OUT_OF_RANGE for a message too long
    /// for its type, RESOURCE_EXHAUSTED for one that would decode too large, INTERNAL
    /// for bytes that are not a message, as prost's own errors).
    fn admit(wire: &[u8]) -> Result<(), Status>;
}

/// A message of fixed shape: at most `max` bytes.
fn at_most(kind: &str, wire: &[u8], max: usize) -> Result<(), Status> {
    if wire.len() <= max {
        Ok(())
    } else {
        Err(Status::out_of_range(format!(
            "a {kind} of {} bytes: at most {max} are accepted",
            wire.len()
        )))
    }
}

macro_rules! fixed {
    ($($ty:ident: $max:expr),* $(,)?) => {$(
        impl Bounded for $ty {
            fn admit(wire: &[u8]) -> Result<(), Status> {
                at_most(stringify!($ty), wire, $max)
            }
        }
    )*};
}

fixed! {
    RegisterRequest: MAX_REGISTER_BYTES,
    RegisterResponse: 64,
    PushAck: 64,
    WatchRequest: 64,
    StatusRequest: 64,
    // The learner's own hashes; nothing a client sends.
    StatusResponse: 4 << 10,
}

impl Bounded for WeightChunk {
    /// A chunk's payload is one allocation of its length: tonic's limit on the message
    /// (the client's `max_message_bytes`) is its bound.
    fn admit(_: &[u8]) -> Result<(), Status> {
        Ok(())
    }
}

impl Bounded for TrajectoryBatch {
    fn admit(wire: &[u8]) -> Result<(), Status> {
        let need = batch_footprint(wire)
            .map_err(|e| Status::internal(format!("malformed TrajectoryBatch: {e}")))?;
        let allowed = wire
            .len()
            .saturating_mul(MAX_DECODE_RATIO)
            .saturating_add(DECODE_ALLOWANCE);
        if need <= allowed {
            Ok(())
        } else {
            Err(Status::resource_exhausted(format!(
                "a TrajectoryBatch of {} bytes would take {need} bytes to decode, {} per byte; at most {MAX_DECODE_RATIO} per byte are accepted (empty trajectories or samples?)",
                wire.len(),
                need / wire.len().max(1)
            )))
        }
    }
}

/// The bytes `Vec<T>` holds after `n` pushes (`size` = `size_of::<T>()`): capacity
/// doubles from 4, as prost decodes repeated fields by pushing (an upper bound for one
/// reserved at once).
fn vec_bytes(n: usize, size: usize) -> usize {
    if n == 0 {
        0
    } else {
        n.checked_next_power_of_two()
            .unwrap_or(usize::MAX)
            .max(4)
            .saturating_mul(size)
    }
}

/// Protobuf wire types.
const VARINT: u8 = 0;
const FIXED64: u8 = 1;
const LEN: u8 = 2;
const FIXED32: u8 = 5;

/// A cursor over encoded bytes.
struct Wire<'a>(&'a [u8]);

impl<'a> Wire<'a> {
    fn varint(&mut self) -> Result<u64, &'static str> {
        let mut v = 0u64;
        for i in 0..10 {
            let (&b, rest) = self.0.split_first().ok_or("truncated varint")?;
            self.0 = rest;
            v |= u64::from(b & 0x7f) << (7 * i);
            if b < 0x80 {
                return Ok(v);
            }
        }
        Err("varint longer than 10 bytes")
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], &'static str> {
        if n > self.0.len() {
            return Err("length beyond the message");
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    /// The next field: its number, its wire type and, for a length-delimited one, its
    /// payload (empty otherwise: a skipped scalar).
    fn field(&mut self) -> Result<(u64, u8, &'a [u8]), &'static str> {
        let key = self.varint()?;
        let (number, wire_type) = (key >> 3, (key & 7) as u8);
        let payload = match wire_type {
            VARINT => {
                self.varint()?;
                &[][..]
            }
            FIXED64 => {
                self.take(8)?;
                &[][..]
            }
            LEN => {
                let n = usize::try_from(self.varint()?).map_err(|_| "length overflows")?;
                self.take(n)?
            }
            FIXED32 => {
                self.take(4)?;
                &[][..]
            }
            _ => return Err("a group or unknown wire type"),
        };
        Ok((number, wire_type, payload))
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Elements a repeated scalar field adds: a packed run (`LEN`) holds as many varints
/// as bytes without the continuation bit, or `payload / 4` fixed32 values; an
/// unpacked element is one.
fn elements(wire_type: u8, payload: &[u8], fixed32: bool) -> usize {
    match (wire_type, fixed32) {
        (LEN, false) => payload.iter().filter(|&&b| b < 0x80).count(),
        (LEN, true) => payload.len().div_ceil(4),
        _ => 1,
    }
}

/// What prost allocates to decode the `TrajectoryBatch` in `wire`.
fn batch_footprint(wire: &[u8]) -> Result<usize, &'static str> {
    let mut w = Wire(wire);
    let (mut trajectories, mut bytes) = (0usize, 0usize);
    while !w.is_empty() {
        let (number, wire_type, payload) = w.field()?;
        if number == 3 && wire_type == LEN {
            trajectories += 1;
            bytes = bytes.saturating_add(trajectory_footprint(payload)?);
        }
    }
    Ok(bytes.saturating_add(vec_bytes(trajectories, size_of::<Trajectory>())))
}

fn trajectory_footprint(wire: &[u8]) -> Result<usize, &'static str> {
    let mut w = Wire(wire);
    let (mut prompt, mut samples, mut bytes) = (0usize, 0usize, 0usize);
    while !w.is_empty() {
        let (number, wire_type, payload) = w.field()?;
        match number {
            1 => prompt += elements(wire_type, payload, false),
            3 if wire_type == LEN => {
                samples += 1;
                bytes = bytes.saturating_add(sample_footprint(payload)?);
            }
            _ => {}
        }
    }
    Ok(bytes
        .saturating_add(vec_bytes(prompt, 4))
        .saturating_add(vec_bytes(samples, size_of::<Sample>())))
}

fn sample_footprint(wire: &[u8]) -> Result<usize, &'static str> {
    let mut w = Wire(wire);
    let (mut tokens, mut logprobs) = (0usize, 0usize);
    while !w.is_empty() {
        let (number, wire_type, payload) = w.field()?;
        match number {
            1 => tokens += elements(wire_type, payload, false),
            2 => logprobs += elements(wire_type, payload, true),
            _ => {}
        }
    }
    Ok(vec_bytes(tokens, 4).saturating_add(vec_bytes(logprobs, 4)))
}

/// prost's encoding with [`Bounded`] checked before every decode; named by the
/// generated client and server (`build.rs`).
#[derive(Debug, Clone)]
pub struct BoundedCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for BoundedCodec<T, U> {
    fn default() -> Self {
        BoundedCodec(PhantomData)
    }
}

impl<T, U> Codec for BoundedCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Bounded + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = BoundedEncoder<T>;
    type Decoder = BoundedDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        BoundedEncoder(PhantomData)
    }

    fn decoder(&mut self) -> Self::Decoder {
        BoundedDecoder(PhantomData)
    }
}

#[derive(Debug, Clone)]
pub struct BoundedEncoder<T>(PhantomData<T>);

impl<T: Message> Encoder for BoundedEncoder<T> {
    type Item = T;
    type Error = Status;

    fn encode(&mut self, item: T, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        // EncodeBuf grows as written to: encoding cannot run out of space.
        item.encode(buf)
            .map_err(|e| Status::internal(format!("encoding a message: {e}")))
    }
}

#[derive(Debug, Clone)]
pub struct BoundedDecoder<U>(PhantomData<U>);

impl<U: Message + Default + Bounded> Decoder for BoundedDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        use prost::bytes::Buf;
        // tonic hands over one whole message in one contiguous buffer.
        let wire = buf.chunk();
        if wire.len() != buf.remaining() {
            return Err(Status::internal("a message split across buffers"));
        }
        U::admit(wire)?;
        U::decode(buf)
            .map(Some)
            .map_err(|e| Status::internal(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(n: usize, token: u32) -> Sample {
        Sample {
            tokens: vec![token; n],
            logprobs: vec![-1.5; n],
        }
    }

    fn batch(trajectories: Vec<Trajectory>) -> TrajectoryBatch {
        TrajectoryBatch {
            version: 3,
            sequence: 7,
            trajectories,
        }
    }

    /// What decoding really allocates, by the same capacity rule, from the decoded
    /// message's vectors' capacities.
    fn allocated(b: &TrajectoryBatch) -> usize {
        let mut n = b.trajectories.capacity() * size_of::<Trajectory>();
        for t in &b.trajectories {
            n += t.prompt.capacity() * 4 + t.samples.capacity() * size_of::<Sample>();
            for s in &t.samples {
                n += s.tokens.capacity() * 4 + s.logprobs.capacity() * 4;
            }
        }
        n
    }

    #[test]
    fn the_footprint_bounds_what_prost_allocates() {
        for (n_traj, len, token) in [(1, 1, 3), (16, 300, 200), (5, 17, 100_000), (3, 0, 0)] {
            let b = batch(
                (0..n_traj)
                    .map(|i| Trajectory {
                        prompt: vec![i as u32 + 1; 5 + i],
                        reward: 0.25,
                        samples: vec![sample(len, token), sample(len + i, token)],
                    })
                    .collect(),
            );
            let wire = b.encode_to_vec();
            let decoded = TrajectoryBatch::decode(&wire[..]).unwrap();
            assert_eq!(decoded, b);
            let counted = batch_footprint(&wire).unwrap();
            assert!(
                counted >= allocated(&decoded),
                "{n_traj} {len}: {counted} vs {}",
                allocated(&decoded)
            );
        }
    }

    #[test]
    fn honest_batches_pass_and_empty_structures_are_refused_before_decoding() {
        // The honest extremes: full samples, and pairs that ended at once.
        let full = batch(vec![
            Trajectory {
                prompt: vec![9; 12],
                reward: 1.0,
                samples: vec![sample(1000, 300); 2],
            };
            16
        ]);
        let ended = batch(vec![
            Trajectory {
                prompt: vec![1, 2, 3],
                reward: 0.0,
                samples: vec![sample(1, 2); 2],
            };
            4096
        ]);
        for b in [&full, &ended] {
            assert!(TrajectoryBatch::admit(&b.encode_to_vec()).is_ok());
        }
        // Thousands of empty trajectories, or of empty samples: refused, and the status
        // says how much decoding would have taken.
        let empty = batch(vec![Trajectory::default(); 100_000]);
        let hollow = batch(vec![
            Trajectory {
                prompt: vec![1],
                reward: 0.0,
                samples: vec![Sample::default(); 64],
            };
            2000
        ]);
        for b in [&empty, &hollow] {
            let wire = b.encode_to_vec();
            let e = TrajectoryBatch::admit(&wire).unwrap_err();
            assert_eq!(e.code(), tonic::Code::ResourceExhausted, "{e:?}");
            assert!(e.message().contains("bytes to decode"), "{e:?}");
            assert!(batch_footprint(&wire).unwrap() > MAX_DECODE_RATIO * wire.len());
        }
    }

    #[test]
    fn bytes_that_are_not_a_message_are_malformed() {
        for wire in [
            &[0x1a, 0x05, 0x0a][..], // a length beyond the message
            &[0x1a, 0x80][..],       // a truncated varint
            &[0x1b, 0x00][..],       // a group
            &[
                0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
            ][..],
        ] {
            let e = TrajectoryBatch::admit(wire).unwrap_err();
            assert_eq!(e.code(), tonic::Code::Internal, "{wire:?}: {e:?}");
        }
    }

    #[test]
    fn fixed_shape_messages_have_a_byte_limit() {
        let r = RegisterRequest {
            model_config_json: "x".repeat(16 << 10),
            name: "n".repeat(256),
            vocab_hash: "v".repeat(128),
            model_config_hash: "h".repeat(128),
            ..Default::default()
        };
        assert!(RegisterRequest::admit(&r.encode_to_vec()).is_ok());
        let e = RegisterRequest::admit(&vec![0u8; MAX_REGISTER_BYTES + 1]).unwrap_err();
        assert_eq!(e.code(), tonic::Code::OutOfRange);
        assert!(WatchRequest::admit(&[0u8; 65]).is_err());
    }
}
