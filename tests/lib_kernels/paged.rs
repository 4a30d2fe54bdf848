//! Decode over a paged KV cache (`paged_decode`, block tables with −1 past each sequence).

use tfmc_conformance::paged::paged_case;
use tfmc_conformance::{assert_nd_close, load_lib, run_out};

use crate::{TOL, rng};

/// `[H, G, E, F, PS, MP]` and the sequence lengths: single tokens and pages, partly filled
/// last pages, an empty sequence, a full table, GQA and MHA.
const CASES: [([usize; 6], &[usize]); 5] = [
    ([1, 1, 1, 1, 1, 1], &[1]),
    ([2, 1, 3, 5, 4, 3], &[5, 0, 12, 1]),
    ([4, 2, 8, 6, 16, 5], &[80, 33, 17]),
    ([3, 3, 4, 4, 7, 4], &[28, 27, 7, 6]),
    ([8, 2, 16, 16, 1, 9], &[9, 3]),
];

#[test]
fn paged_decode_matches_reference() {
    let program = load_lib("paged.tfm");
    for (i, (sizes, lens)) in CASES.into_iter().enumerate() {
        for scale in [1.0, 100.0] {
            let case = paged_case(&mut rng(1200 + i as u64), sizes, lens, scale);
            let got = run_out(&program, "paged_decode", &case.inputs(), &[], "O");
            assert_nd_close(&format!("paged_decode {sizes:?} lens {lens:?} x{scale}"), &got, &case.reference(), TOL);
        }
    }
}

#[test]
fn paged_decode_ignores_pages_past_the_length() {
    // Rewriting every page no sequence reaches (and every table entry past the last page)
    // changes nothing.
    let program = load_lib("paged.tfm");
    let mut case = paged_case(&mut rng(1300), [2, 1, 4, 3, 4, 4], &[6, 9], 1.0);
    let before = run_out(&program, "paged_decode", &case.inputs(), &[], "O");
    let used: Vec<i32> =
        [(0, 2), (1, 3)].iter().flat_map(|&(s, n)| (0..n).map(move |j| (s, j))).map(|(s, j)| case.tbl[s * 4 + j]).collect();
    for (s, n) in [(0usize, 2usize), (1, 3)] {
        for j in n..4 {
            case.tbl[s * 4 + j] = -7;
        }
    }
    let (nb, ps, g, e) = (case.kp.shape[0], case.kp.shape[1], case.kp.shape[2], case.kp.shape[3]);
    for page in (0..nb).filter(|p| !used.contains(&(*p as i32))) {
        for t in 0..ps {
            for x in 0..g {
                for y in 0..e {
                    case.kp.set(&[page, t, x, y], 1e30);
                }
            }
        }
    }
    // Keys 6.. of sequence 0 and 9.. of sequence 1 share pages with live keys: poison them too.
    for (s, from, to) in [(0usize, 6usize, 8usize), (1, 9, 12)] {
        for m in from..to {
            let page = case.tbl[s * 4 + m / ps] as usize;
            for x in 0..g {
                for y in 0..e {
                    case.kp.set(&[page, m % ps, x, y], f64::NAN);
                }
            }
        }
    }
    let after = run_out(&program, "paged_decode", &case.inputs(), &[], "O");
    assert_nd_close("paged_decode with dead pages rewritten", &after, &before, tfmc_conformance::Tol::EXACT);
}
