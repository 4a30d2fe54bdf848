//! Sanity checks of the references themselves, against closed forms and alternative
//! formulations (so a wrong reference cannot silently agree with a wrong kernel).

use super::*;

fn rand(seed: u64, shape: &[usize]) -> Nd {
    // A tiny LCG: the references must not depend on the RNG the tests use.
    let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    let n = shape.iter().product();
    let data = (0..n)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
        })
        .collect();
    Nd::new(shape, data)
}

fn close(a: &Nd, b: &Nd) {
    assert_eq!(a.shape, b.shape);
    for (x, y) in a.data.iter().zip(&b.data) {
        assert!((x - y).abs() <= 1e-12 * (1.0 + y.abs()), "{x} vs {y}");
    }
}

#[test]
fn softmax_row_basics() {
    // Fully masked: zeros. Equal logits: the mean. Huge logits: the argmax row.
    assert_eq!(softmax_row(&[None, None], 2, |_, _| 1.0), vec![0.0, 0.0]);
    assert_eq!(softmax_row(&[Some(3.0), Some(3.0)], 1, |m, _| m as f64), vec![0.5]);
    let row = softmax_row(&[Some(1e4), Some(-1e4), None], 1, |m, _| m as f64 + 1.0);
    assert_eq!(row, vec![1.0]);
}

#[test]
fn sdpa_by_explicit_softmax_matrix() {
    let (q, k, v) = (rand(1, &[1, 1, 3, 2]), rand(2, &[1, 1, 4, 2]), rand(3, &[1, 1, 4, 2]));
    let mut want = Nd::zeros(&[1, 1, 3, 2]);
    for p in 0..3 {
        let s: Vec<f64> =
            (0..4).map(|m| (q.at(&[0, 0, p, 0]) * k.at(&[0, 0, m, 0]) + q.at(&[0, 0, p, 1]) * k.at(&[0, 0, m, 1])) / 2f64.sqrt()).collect();
        let z: f64 = s.iter().map(|x| x.exp()).sum();
        for f in 0..2 {
            want.set(&[0, 0, p, f], (0..4).map(|m| s[m].exp() / z * v.at(&[0, 0, m, f])).sum());
        }
    }
    close(&sdpa(&q, &k, &v), &want);
}

#[test]
fn masks_and_groups_reduce_to_sdpa() {
    let (q, k, v) = (rand(4, &[2, 3, 5, 4]), rand(5, &[2, 3, 5, 4]), rand(6, &[2, 3, 5, 3]));
    close(&gqa(&q, &k, &v), &sdpa(&q, &k, &v));
    close(&window(&q, &k, &v, 5), &causal(&q, &k, &v));
    close(&softcap(&q, &k, &v, 1e9), &sdpa(&q, &k, &v));
    assert!(window(&q, &k, &v, 0).data.iter().all(|&x| x == 0.0));
    // Causal row p equals sdpa over keys 0..=p.
    let c = causal(&q, &k, &v);
    let cut = |x: &Nd, n: usize| {
        let mut y = Nd::zeros(&[2, 3, n, x.shape[3]]);
        for (b, h, m, e) in itertools(2, 3, n, x.shape[3]) {
            y.set(&[b, h, m, e], x.at(&[b, h, m, e]));
        }
        y
    };
    let s = sdpa(&q, &cut(&k, 3), &cut(&v, 3));
    for (b, h, f) in (0..2).flat_map(|b| (0..3).flat_map(move |h| (0..3).map(move |f| (b, h, f)))) {
        assert!((c.at(&[b, h, 2, f]) - s.at(&[b, h, 2, f])).abs() < 1e-12);
    }
    // MQA is GQA with one group.
    let (k1, v1) = (rand(7, &[2, 5, 4]), rand(8, &[2, 5, 3]));
    let g = gqa(&q, &Nd::new(&[2, 1, 5, 4], k1.data.clone()), &Nd::new(&[2, 1, 5, 3], v1.data.clone()));
    close(&mqa(&q, &k1, &v1), &g);
}

fn itertools(a: usize, b: usize, c: usize, d: usize) -> impl Iterator<Item = (usize, usize, usize, usize)> {
    (0..a).flat_map(move |i| (0..b).flat_map(move |j| (0..c).flat_map(move |k| (0..d).map(move |l| (i, j, k, l)))))
}

#[test]
fn varlen_single_sequence_is_causal() {
    let (q, k, v) = (rand(9, &[6, 2, 3]), rand(10, &[6, 2, 3]), rand(11, &[6, 2, 4]));
    let batch = |x: &Nd| {
        let mut y = Nd::zeros(&[1, x.shape[1], x.shape[0], x.shape[2]]);
        for (t, h, i, _) in itertools(x.shape[0], x.shape[1], x.shape[2], 1) {
            y.set(&[0, h, t, i], x.at(&[t, h, i]));
        }
        y
    };
    close(&batch(&varlen_causal(&q, &k, &v, &[0, 6])), &causal(&batch(&q), &batch(&k), &batch(&v)));
}

#[test]
fn retention_and_linear_equal_their_recurrences() {
    let (q, k, v) = (rand(12, &[1, 2, 6, 3]), rand(13, &[1, 2, 6, 3]), rand(14, &[1, 2, 6, 2]));
    let gamma = [0.9, 0.6];
    let (ret, lin) = (retention(&q, &k, &v, &gamma), linear_causal(&q, &k, &v));
    let phi = |x: f64| if x > 0.0 { x + 1.0 } else { x.exp() };
    for h in 0..2 {
        let (mut s, mut skv, mut z) = ([[0.0; 2]; 3], [[0.0; 2]; 3], [0.0; 3]);
        for t in 0..6 {
            for e in 0..3 {
                z[e] += phi(k.at(&[0, h, t, e]));
                for f in 0..2 {
                    s[e][f] = gamma[h] * s[e][f] + k.at(&[0, h, t, e]) * v.at(&[0, h, t, f]);
                    skv[e][f] += phi(k.at(&[0, h, t, e])) * v.at(&[0, h, t, f]);
                }
            }
            let den: f64 = (0..3).map(|e| phi(q.at(&[0, h, t, e])) * z[e]).sum();
            for f in 0..2 {
                let o: f64 = (0..3).map(|e| q.at(&[0, h, t, e]) * s[e][f]).sum();
                assert!((ret.at(&[0, h, t, f]) - o).abs() < 1e-12);
                let n: f64 = (0..3).map(|e| phi(q.at(&[0, h, t, e])) * skv[e][f]).sum();
                assert!((lin.at(&[0, h, t, f]) - n / den).abs() < 1e-12);
            }
        }
    }
}

#[test]
fn selective_scan_single_step_closed_form() {
    // T = 1: h = Δ B x, so y = Δ x (B · C) + Dskip x.
    let (x, dt, a, bm, c) = (rand(15, &[1, 1, 2]), rand(16, &[1, 1, 2]), rand(17, &[2, 3]), rand(18, &[1, 1, 3]), rand(19, &[1, 1, 3]));
    let y = selective_scan(&x, &dt, &a, &bm, &c, &[0.5, -0.25]);
    let bc: f64 = (0..3).map(|n| bm.at(&[0, 0, n]) * c.at(&[0, 0, n])).sum();
    for (d, skip) in [0.5, -0.25].into_iter().enumerate() {
        let want = dt.at(&[0, 0, d]) * x.at(&[0, 0, d]) * bc + skip * x.at(&[0, 0, d]);
        assert!((y.at(&[0, 0, d]) - want).abs() < 1e-12);
    }
}

#[test]
fn alibi_slopes_are_geometric() {
    // H = 8: slopes 1/2, 1/4, ..., 1/256 (Press et al. 2022). With K = 0 all dot products vanish,
    // so the weights are exp(-slope (p - m)) normalized.
    let q = rand(20, &[1, 8, 3, 2]);
    let (k, v) = (Nd::zeros(&[1, 8, 3, 2]), Nd::new(&[1, 8, 3, 1], (0..24).map(|i| (i % 3) as f64).collect()));
    let o = alibi(&q, &k, &v);
    for h in 0..8 {
        let s = 0.5f64.powi(h as i32 + 1);
        let w: Vec<f64> = (0..3).map(|m| (-s * (2 - m) as f64).exp()).collect();
        let want = (w[1] + 2.0 * w[2]) / w.iter().sum::<f64>();
        assert!((o.at(&[0, h, 2, 0]) - want).abs() < 1e-12, "head {h}");
    }
}

#[test]
fn variants_reduce_to_known_kernels() {
    let (q, k, v) = (rand(20, &[1, 2, 5, 3]), rand(21, &[1, 2, 6, 3]), rand(22, &[1, 2, 6, 4]));
    // Differential attention with lambda = 0 is sdpa; with equal maps it is (1 - lambda) sdpa.
    close(&diff_attention(&q, &q, &k, &k, &v, 0.0), &sdpa(&q, &k, &v));
    let scaled = Nd::new(&[1, 2, 5, 4], sdpa(&q, &k, &v).data.iter().map(|x| 0.25 * x).collect());
    close(&diff_attention(&q, &q, &k, &k, &v, 0.75), &scaled);
    // A sink at -1e300 weighs nothing: plain softmax (causal, windowed).
    close(&sink_attention(&q, &k, &v, &[-1e300; 2], false, i64::MAX), &sdpa(&q, &k, &v));
    close(&sink_attention(&q, &k, &v, &[-1e300; 2], true, 3), &window(&q, &k, &v, 3));
    // A full adjacency is sdpa.
    close(&graph_attention(&q, &k, &v, &Nd::new(&[1, 5, 6], vec![1.0; 30])), &sdpa(&q, &k, &v));
}

#[test]
fn softmax_one_by_its_definition() {
    // exp(l) / (1 + sum exp(l)) on small logits, straight from Miller's formula.
    let (q, k, v) = (rand(30, &[1, 1, 3, 2]), rand(31, &[1, 1, 4, 2]), rand(32, &[1, 1, 4, 3]));
    let mut want = Nd::zeros(&[1, 1, 3, 3]);
    for p in 0..3 {
        let e: Vec<f64> = (0..4).map(|m| (dot(2, |i| q.at(&[0, 0, p, i]), |i| k.at(&[0, 0, m, i])) / 2f64.sqrt()).exp()).collect();
        let den = 1.0 + e.iter().sum::<f64>();
        for f in 0..3 {
            want.set(&[0, 0, p, f], (0..4).map(|m| e[m] * v.at(&[0, 0, m, f])).sum::<f64>() / den);
        }
    }
    close(&sink_attention(&q, &k, &v, &[0.0], false, i64::MAX), &want);
    // Sigmoid attention: one key, weight sigmoid(l - ln 1) = sigmoid(l).
    let (k1, v1) = (rand(33, &[1, 1, 1, 2]), rand(34, &[1, 1, 1, 3]));
    let o = sigmoid_attention(&q, &k1, &v1, false);
    let l = dot(2, |i| q.at(&[0, 0, 2, i]), |i| k1.at(&[0, 0, 0, i])) / 2f64.sqrt();
    assert!((o.at(&[0, 0, 2, 1]) - v1.at(&[0, 0, 0, 1]) / (1.0 + (-l).exp())).abs() < 1e-15);
}
