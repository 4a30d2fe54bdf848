//! What the AOT (shared-library) backend needs from the runtime: the C runtime source linked
//! into every artifact ([`C_RUNTIME_SOURCE`]) and the checksum trailer ([`seal`], [`unseal`]).
//!
//! A sealed artifact is `payload ‖ trailer`, the 24-byte trailer being
//! `b"TFMCSEAL"`, `u32 LE` [`TRAILER_VERSION`], `u32 LE` CRC-32 (IEEE, `crc32fast`) of the
//! payload, `u64 LE` payload length. The dynamic loader ignores bytes after the last ELF
//! segment, so a sealed library still loads; the runtime refuses to load an unsealed, truncated,
//! extended or corrupted one ([`unseal`] is checked before the ELF is even parsed).

use std::fs::OpenOptions;
use std::io::{self, Read, Write};
use std::path::Path;

use crate::error::ArtifactError;

/// The C runtime (`runtime/c/tfmc_rt.c`) compiled into every AOT artifact: the thread pool
/// behind `tfmc_parallel_for`, `tfmc_set_num_threads` and `tfmc_get_num_threads`. Plain C11 +
/// pthreads (link with `-pthread`).
pub const C_RUNTIME_SOURCE: &str = include_str!("../c/tfmc_rt.c");

/// The first 8 bytes of the trailer.
pub const TRAILER_MAGIC: [u8; 8] = *b"TFMCSEAL";

/// The trailer layout version [`seal`] writes and [`unseal`] accepts.
pub const TRAILER_VERSION: u32 = 1;

/// Size of the trailer in bytes.
pub const TRAILER_LEN: usize = 24;

/// The trailer for `payload`.
pub fn trailer(payload: &[u8]) -> [u8; TRAILER_LEN] {
    let mut t = [0u8; TRAILER_LEN];
    t[..8].copy_from_slice(&TRAILER_MAGIC);
    t[8..12].copy_from_slice(&TRAILER_VERSION.to_le_bytes());
    t[12..16].copy_from_slice(&crc32fast::hash(payload).to_le_bytes());
    t[16..24].copy_from_slice(&(payload.len() as u64).to_le_bytes());
    t
}

/// Appends the checksum trailer to the file at `path` (its whole current content is the
/// payload). Sealing twice seals the sealed file again; [`unseal`] then returns the first
/// sealed file, so seal exactly once, as the last step of writing an artifact.
pub fn seal(path: &Path) -> io::Result<()> {
    let mut file = OpenOptions::new().read(true).append(true).open(path)?;
    let mut payload = Vec::new();
    file.read_to_end(&mut payload)?;
    file.write_all(&trailer(&payload))?;
    file.sync_all()
}

/// Checks the trailer of a sealed artifact's bytes and returns the payload (the bytes before
/// the trailer).
///
/// Errors: [`ArtifactError::NotSealed`] (too short or no magic), [`ArtifactError::TrailerVersion`],
/// [`ArtifactError::Length`] (bytes missing or added), [`ArtifactError::Checksum`] (corrupted).
pub fn unseal(bytes: &[u8]) -> Result<&[u8], ArtifactError> {
    let Some(payload_len) = bytes.len().checked_sub(TRAILER_LEN) else {
        return Err(ArtifactError::NotSealed);
    };
    let (payload, t) = bytes.split_at(payload_len);
    if t[..8] != TRAILER_MAGIC {
        return Err(ArtifactError::NotSealed);
    }
    let version = u32::from_le_bytes([t[8], t[9], t[10], t[11]]);
    if version != TRAILER_VERSION {
        return Err(ArtifactError::TrailerVersion { found: version, expected: TRAILER_VERSION });
    }
    let recorded_crc = u32::from_le_bytes([t[12], t[13], t[14], t[15]]);
    let mut len = [0u8; 8];
    len.copy_from_slice(&t[16..24]);
    let recorded_len = u64::from_le_bytes(len);
    if recorded_len != payload_len as u64 {
        return Err(ArtifactError::Length { recorded: recorded_len, actual: payload_len as u64 });
    }
    let computed = crc32fast::hash(payload);
    if computed != recorded_crc {
        return Err(ArtifactError::Checksum { recorded: recorded_crc, computed });
    }
    Ok(payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sealed(payload: &[u8]) -> Vec<u8> {
        let mut v = payload.to_vec();
        v.extend_from_slice(&trailer(payload));
        v
    }

    #[test]
    fn round_trip() {
        let s = sealed(b"hello world");
        assert_eq!(unseal(&s).ok(), Some(&b"hello world"[..]));
        assert_eq!(unseal(&sealed(b"")).ok(), Some(&b""[..]));
    }

    #[test]
    fn rejects_damage() {
        let s = sealed(b"hello world");
        assert!(matches!(unseal(&s[..10]), Err(ArtifactError::NotSealed)));
        assert!(matches!(unseal(b"hello world"), Err(ArtifactError::NotSealed)));
        // A byte cut from the front: magic intact, length wrong.
        assert!(matches!(unseal(&s[1..]), Err(ArtifactError::Length { .. })));
        let mut flipped = s.clone();
        flipped[3] ^= 0x10;
        assert!(matches!(unseal(&flipped), Err(ArtifactError::Checksum { .. })));
        let mut v2 = s.clone();
        let at = s.len() - TRAILER_LEN + 8;
        v2[at] = 2;
        assert!(matches!(unseal(&v2), Err(ArtifactError::TrailerVersion { found: 2, .. })));
    }

    #[test]
    fn seal_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.bin");
        std::fs::write(&p, b"payload").unwrap();
        seal(&p).unwrap();
        let bytes = std::fs::read(&p).unwrap();
        assert_eq!(bytes.len(), 7 + TRAILER_LEN);
        assert_eq!(unseal(&bytes).unwrap(), b"payload");
    }
}
