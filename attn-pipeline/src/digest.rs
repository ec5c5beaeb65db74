//! A small stable digest (64-bit FNV-1a) of what produced a dataset: corpus contents, input files.
//! Not cryptographic: it tells a changed input from the one a dataset was made with.

/// 64-bit FNV-1a over everything fed to it.
pub(crate) struct Digest(u64);

impl Digest {
    pub(crate) fn new() -> Self {
        Digest(0xcbf2_9ce4_8422_2325)
    }

    pub(crate) fn eat(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    /// `fnv1a64:<16 hex digits>`, as stored in a dataset's run parameters.
    pub(crate) fn finish(&self) -> String {
        format!("fnv1a64:{:016x}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::Digest;

    #[test]
    fn digest_is_fnv1a64() {
        // FNV-1a 64 of "a" is af63dc4c8601ec8c (the published test vector).
        let mut d = Digest::new();
        d.eat(b"a");
        assert_eq!(d.finish(), "fnv1a64:af63dc4c8601ec8c");
        assert_eq!(Digest::new().finish(), "fnv1a64:cbf29ce484222325");
    }
}
