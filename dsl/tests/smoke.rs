use tfm_dsl::{FileId, parse_file};

#[test]
fn parses_spec_example() {
    let src = r#"
use "common.tfm"
/// Window size.
param W: i64 = 256
param c: f32 = -30.0
/// lse pair
reduction lse(mx: f32, l: f32) {
    identity = (-inf, 0.0)
    combine(a, b) {
        let m = max(a.mx, b.mx)
        (m, a.l * exp(a.mx - m) + b.l * exp(b.mx - m))
    }
}
/// Scaled dot-product attention.
kernel sdpa(Q: f32[B, H, P, E], K: f32[B, H, M, E], V: f32[B, H, M, F]) -> (O: f32[B, H, P, F]) where m <= p && p - m < W {
    S[b, h, p, m] = sum[e](Q[b, h, p, e] * K[b, h, m, e]) * rsqrt(E)
    G[b, h, p]    = max[m where m <= p](S[b, h, p, m])
    N[b, h, p, m] = exp(S[b, h, p, m] - G[b, h, p])
    D[b, h, p]    = sum[m](N[b, h, p, m])
    O[b, h, p, f] = sum[m](N[b, h, p, m] * V[b, h, m, f]) / D[b, h, p]
}
kernel st(S: f32[P, M], X: f32[T]) -> O: f32[P] {
    index s: T
    G[p], L[p] = lse[m](S[p, m], 1.0)
    Z[] = sum[s](X[s])
    H[t] = scan[t, init = 0.0](0.5 * H[t - 1] + X[t]) where t > 0
    A, B2 = sdpa(S, S, S, W = 3)
    O[p] = if G[p] > 0.0 then f32(-L[p]) else Z
}
"#;
    let f = parse_file(src, FileId(0)).unwrap_or_else(|d| panic!("{d:?}"));
    assert_eq!(f.items.len(), 6);
}
