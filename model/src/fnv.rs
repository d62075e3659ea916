//! FNV-1a, 64 bits: a small, stable, dependency-free hash for ids, splits and seeds.

#[derive(Clone, Copy, Debug)]
pub struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    pub fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }

    pub fn finish(self) -> u64 {
        self.0
    }

    /// The hash of `bytes`, starting from `seed` mixed into the offset basis.
    pub fn seeded(seed: u64, bytes: &[u8]) -> u64 {
        let mut h = Fnv(0xcbf2_9ce4_8422_2325 ^ seed);
        h.write(bytes);
        h.finish()
    }
}
