//! The `.npy` array codec: bytes of one array to a [`Tensor`] and back, without any file or
//! archive handling (that lives in [`crate::npz`]).
//!
//! Decoding accepts numpy's `float16`, `float32`, `float64`, `int32`, `int64` and `bool` in
//! either byte order, C order only; anything else is a [`NpyError`], never a panic. Encoding
//! goes through npyz's writer and writes each tensor in its own dtype, little-endian, C order,
//! except `bf16`, which numpy lacks and which is written as `float32` (exactly: every bf16 is
//! an f32).

use std::io::{self, Write};

use half::f16;
use npyz::WriterBuilder;

use crate::npy_header::{Value, parse_header};
use crate::tensor::{DType, Scalar, Tensor, TensorData};

/// Why an array could not be decoded (the caller adds the file and array names).
#[derive(Debug)]
pub(crate) enum NpyError {
    /// Corrupt or truncated data; the string is a lowercase reason.
    Malformed(String),
    /// A well-formed array of a dtype tfmc does not handle.
    Unsupported {
        /// numpy's name for it (`uint8`, `complex128`, ...), or the descr when it has none.
        numpy: String,
        /// The raw `descr` from the header.
        descr: String,
    },
    /// A well-formed array in Fortran order.
    FortranOrder,
    /// The decoded array would need more memory than is available; the string says how much.
    TooLarge(String),
}

/// Decodes one whole `.npy` array (header and data; trailing bytes are an error). The decoded
/// elements (8 bytes each, 1 for bool) must fit in `limit` bytes of memory when a limit is
/// given, and are allocated fallibly: an array too large is [`NpyError::TooLarge`], not an
/// abort.
pub(crate) fn decode(bytes: &[u8], limit: Option<u64>) -> Result<Tensor, NpyError> {
    let header = parse_header(bytes).map_err(NpyError::Malformed)?;
    let (dtype, big_endian) = match &header.descr {
        Value::Str(s) => parse_type_str(s)?,
        other => {
            return Err(NpyError::Unsupported { numpy: "structured".into(), descr: other.to_string() });
        }
    };
    if header.fortran_order {
        return Err(NpyError::FortranOrder);
    }
    let data = &bytes[header.data_offset..];
    let size = dtype.size_bytes();
    let need = header.len.checked_mul(size).ok_or_else(|| malformed("array is too large"))?;
    if data.len() < need {
        return Err(malformed(format!(
            "array data is truncated: shape {:?} of {} needs {need} bytes, found {}",
            header.shape,
            dtype,
            data.len()
        )));
    }
    if data.len() > need {
        return Err(malformed(format!("{} unexpected bytes after the array data", data.len() - need)));
    }
    let decoded = if dtype == DType::Bool { 1 } else { 8 };
    let need = (header.len as u64).saturating_mul(decoded);
    crate::memory::check(&format!("decoding shape {:?} of {dtype}", header.shape), need, limit).map_err(NpyError::TooLarge)?;
    let chunks = data.chunks_exact(size);
    macro_rules! num {
        ($ty:ty, $n:literal) => {
            chunks.map(|c| {
                let b: [u8; $n] = c.try_into().expect("chunks_exact yields chunks of the element size");
                if big_endian { <$ty>::from_be_bytes(b) } else { <$ty>::from_le_bytes(b) }
            })
        };
    }
    let n = header.len;
    let data = match dtype {
        DType::F16 => TensorData::F(collect(n, num!(u16, 2).map(|b| f16::from_bits(b).to_f64()))?),
        DType::F32 | DType::BF16 => TensorData::F(collect(n, num!(f32, 4).map(f64::from))?),
        DType::F64 => TensorData::F(collect(n, num!(f64, 8))?),
        DType::I32 => TensorData::I(collect(n, num!(i32, 4).map(i64::from))?),
        DType::I64 => TensorData::I(collect(n, num!(i64, 8))?),
        DType::Bool => TensorData::B(collect(n, data.iter().map(|&b| b != 0))?),
    };
    Tensor::new(dtype, header.shape, data).map_err(|e| malformed(e.to_string()))
}

/// The `n` items of `items` in a vector allocated fallibly.
fn collect<T>(n: usize, items: impl Iterator<Item = T>) -> Result<Vec<T>, NpyError> {
    let mut v = Vec::new();
    v.try_reserve_exact(n).map_err(|e| {
        NpyError::TooLarge(format!("cannot allocate {} for {n} decoded elements: {e}", crate::memory::size((n * size_of::<T>()) as u64)))
    })?;
    v.extend(items);
    Ok(v)
}

fn malformed(reason: impl Into<String>) -> NpyError {
    NpyError::Malformed(reason.into())
}

/// Maps a numpy type string (`<f4`, `|b1`, `>i8`) to a dtype and whether it is big-endian.
fn parse_type_str(s: &str) -> Result<(DType, bool), NpyError> {
    let (big_endian, rest) = match s.as_bytes().first() {
        Some(b'>') => (true, &s[1..]),
        Some(b'<' | b'|') => (false, &s[1..]),
        Some(b'=') => (cfg!(target_endian = "big"), &s[1..]),
        _ => (cfg!(target_endian = "big"), s),
    };
    let mut chars = rest.chars();
    let kind = chars.next();
    let tail = chars.as_str();
    let digits = tail.find(|c: char| !c.is_ascii_digit()).unwrap_or(tail.len());
    let size = tail[..digits].parse::<u64>().ok();
    let suffix = &tail[digits..];
    let dtype = match (kind, size, suffix) {
        (Some('f'), Some(2), "") => Some(DType::F16),
        (Some('f'), Some(4), "") => Some(DType::F32),
        (Some('f'), Some(8), "") => Some(DType::F64),
        (Some('i'), Some(4), "") => Some(DType::I32),
        (Some('i'), Some(8), "") => Some(DType::I64),
        (Some('b'), Some(1), "") | (Some('?'), None, "") => Some(DType::Bool),
        _ => None,
    };
    match dtype {
        Some(d) => Ok((d, big_endian)),
        None => Err(NpyError::Unsupported { numpy: numpy_name(kind, size, suffix, s), descr: format!("'{s}'") }),
    }
}

/// numpy's `dtype.name` for a type string, as far as it can be told (the type string otherwise).
fn numpy_name(kind: Option<char>, size: Option<u64>, suffix: &str, descr: &str) -> String {
    let bits = size.map(|s| s.saturating_mul(8));
    match (kind, bits) {
        (Some('b'), _) => "bool".into(),
        (Some('i'), Some(b)) => format!("int{b}"),
        (Some('u'), Some(b)) => format!("uint{b}"),
        (Some('f'), Some(b)) => format!("float{b}"),
        (Some('c'), Some(b)) => format!("complex{b}"),
        (Some('M'), _) => format!("datetime64{suffix}"),
        (Some('m'), _) => format!("timedelta64{suffix}"),
        (Some('S' | 'a'), Some(b)) => format!("bytes{b}"),
        (Some('U'), Some(_)) => format!("str{}", size.unwrap_or(0).saturating_mul(32)),
        (Some('V'), Some(b)) => format!("void{b}"),
        (Some('O'), _) => "object".into(),
        _ => descr.to_string(),
    }
}

/// Encodes `t` as a whole `.npy` array into `w`. The tensor must satisfy [`Tensor::check`].
pub(crate) fn encode<W: Write>(w: W, t: &Tensor) -> io::Result<()> {
    let shape: Vec<u64> = t.shape().iter().map(|&d| d as u64).collect();
    let elems = (0..t.len()).map(|i| t.get(i));
    match t.dtype() {
        DType::F16 => write_elems(w, &shape, elems.map(|s| f16::from_f64(s.as_f64()))),
        DType::BF16 | DType::F32 => write_elems(w, &shape, elems.map(|s| s.as_f64() as f32)),
        DType::F64 => write_elems(w, &shape, elems.map(Scalar::as_f64)),
        DType::I32 => write_elems(w, &shape, elems.map(|s| s.as_i64() as i32)),
        DType::I64 => write_elems(w, &shape, elems.map(Scalar::as_i64)),
        DType::Bool => write_elems(w, &shape, elems.map(Scalar::as_bool)),
    }
}

fn write_elems<T: npyz::AutoSerialize, W: Write>(w: W, shape: &[u64], items: impl Iterator<Item = T>) -> io::Result<()> {
    let mut writer = npyz::WriteOptions::<T>::new().default_dtype().shape(shape).writer(w).begin_nd()?;
    writer.extend(items)?;
    writer.finish()
}
