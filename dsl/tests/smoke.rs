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

/// A UTF-8 byte-order mark opening the file is accepted (some editors write one).
#[test]
fn byte_order_mark_is_accepted() {
    let src = "\u{feff}param W: i64 = 3\n";
    let f = parse_file(src, FileId(0)).unwrap_or_else(|d| panic!("{d:?}"));
    assert_eq!(f.items.len(), 1);
    // Elsewhere it is an unexpected character, named by its code point.
    let d = parse_file("param W: i64 = 3\n\u{feff}", FileId(0)).expect_err("a mark inside the file");
    assert_eq!(d.message, "syntax error: unexpected character U+FEFF");
}

/// NUL and other control characters are never echoed raw: the message names the code point
/// and the quoted source line shows a control picture.
#[test]
fn control_characters_are_not_echoed_raw() {
    let src = "param W: i64 = 3\nparam \0X: i64 = 4\n";
    let d = parse_file(src, FileId(0)).expect_err("a NUL byte");
    assert_eq!(d.message, "syntax error: unexpected character U+0000");
    let mut sources = tfm_dsl::SourceMap::new();
    sources.add("nul.tfm", None, src.to_string());
    let text = d.render(&sources);
    assert!(!text.contains('\0'), "{text:?}");
    assert!(text.contains("param \u{2400}X: i64 = 4"), "{text}");
    assert!(text.contains("nul.tfm:2:7"), "{text}");
}

/// `-9223372036854775808` is i64::MIN (its magnitude alone does not fit), in expressions and
/// param defaults; a float literal beyond f64 is an error, not a silent infinity.
#[test]
fn literal_ranges() {
    use tfm_dsl::ast::{ExprKind, Item, Lit, Rhs, Stmt};
    let src = "param a: i64 = -9223372036854775808\nkernel k(X: i64[N]) -> (O: i64[N]) {\n    O[n] = X[n] + -9223372036854775808\n}\n";
    let f = parse_file(src, FileId(0)).unwrap_or_else(|d| panic!("{d:?}"));
    let Item::Param(p) = &f.items[0] else { panic!("a param") };
    assert_eq!(p.default.map(|(l, _)| l), Some(Lit::Int(i64::MIN)));
    let Item::Kernel(k) = &f.items[1] else { panic!("a kernel") };
    let Stmt::Assign(a) = &k.body[0] else { panic!("an assignment") };
    let Rhs::Expr(value) = &a.rhs else { panic!("an expression") };
    let ExprKind::Binary(_, _, rhs) = &value.kind else { panic!("a sum: {value:?}") };
    assert!(matches!(rhs.kind, ExprKind::Lit(Lit::Int(i64::MIN))), "{rhs:?}");
    for bad in ["param a: i64 = 9223372036854775808\n", "param a: f64 = 1e400\n", "param a: f64 = -1e400\n"] {
        let d = parse_file(bad, FileId(0)).expect_err(bad);
        assert!(d.message.ends_with("literal out of range"), "{bad}: {}", d.message);
    }
}
