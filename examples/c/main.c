/* Calling a tfmc-compiled kernel from C.
 *
 * Build the library and its header, then this program (see README.md):
 *   tfmc build lib/sdpa.tfm -o libsdpa.so          # writes libsdpa.so and libsdpa.h
 *   cc -std=c11 -Wall -Wextra -Werror -I. main.c -L. -lsdpa -Wl,-rpath,. -lm -o sdpa_example
 *
 * It fills Q, K and V deterministically, calls tfmc_sdpa (arguments: inputs, outputs, then
 * the dims in the order the header lists them, then params - sdpa has none), checks the
 * return code, compares O with a naive softmax attention in double precision and prints
 * "OK" (exit 0) or "FAIL" (exit 1). It also checks that a negative dim is refused with
 * TFMC_FAIL_BAD_DIMS, and a NULL pointer with TFMC_FAIL_NULL_POINTER, before any buffer is
 * touched. */

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "libsdpa.h"

/* Dims: batch, heads, queries, head size, keys, value size (odd sizes on purpose). */
enum { B = 2, H = 3, P = 5, E = 8, M = 9, F = 6 };

static const double TOL = 1e-4;

/* The name of a failure kind (the low byte of a non-zero return code). */
static const char *fail_kind_name(int32_t code) {
    switch (code & 0xff) {
    case TFMC_FAIL_OUT_OF_RANGE: return "TFMC_FAIL_OUT_OF_RANGE";
    case TFMC_FAIL_DIV_BY_ZERO: return "TFMC_FAIL_DIV_BY_ZERO";
    case TFMC_FAIL_OVERFLOW: return "TFMC_FAIL_OVERFLOW";
    case TFMC_FAIL_ABSENT: return "TFMC_FAIL_ABSENT";
    case TFMC_FAIL_OUT_OF_MEMORY: return "TFMC_FAIL_OUT_OF_MEMORY";
    case TFMC_FAIL_BAD_DIMS: return "TFMC_FAIL_BAD_DIMS";
    case TFMC_FAIL_INTERNAL: return "TFMC_FAIL_INTERNAL";
    case TFMC_FAIL_NULL_POINTER: return "TFMC_FAIL_NULL_POINTER";
    default: return "unknown failure kind";
    }
}

/* A deterministic fill in [-1, 1): a 32-bit LCG (exact in every C implementation). */
static void fill(float *x, size_t n, uint32_t seed) {
    uint32_t s = seed;
    for (size_t i = 0; i < n; i++) {
        s = s * 1664525u + 1013904223u;
        x[i] = (float)(s >> 8) / (float)(1u << 23) - 1.0f;
    }
}

/* O = softmax(Q K^T / sqrt(E)) V, one row at a time, in double precision. */
static void reference(const float *q, const float *k, const float *v, double *o) {
    double s[M];
    for (size_t bh = 0; bh < (size_t)B * H; bh++) {
        for (size_t p = 0; p < P; p++) {
            const float *qrow = q + (bh * P + p) * E;
            double max = -INFINITY;
            for (size_t m = 0; m < M; m++) {
                const float *krow = k + (bh * M + m) * E;
                double dot = 0.0;
                for (size_t e = 0; e < E; e++) dot += (double)qrow[e] * (double)krow[e];
                s[m] = dot / sqrt((double)E);
                if (s[m] > max) max = s[m];
            }
            double total = 0.0;
            for (size_t m = 0; m < M; m++) {
                s[m] = exp(s[m] - max);
                total += s[m];
            }
            for (size_t f = 0; f < F; f++) {
                double acc = 0.0;
                for (size_t m = 0; m < M; m++) acc += s[m] * (double)v[(bh * M + m) * F + f];
                o[(bh * P + p) * F + f] = acc / total;
            }
        }
    }
}

int main(void) {
    const size_t nq = (size_t)B * H * P * E, nk = (size_t)B * H * M * E;
    const size_t nv = (size_t)B * H * M * F, no = (size_t)B * H * P * F;
    float *q = malloc(nq * sizeof *q), *k = malloc(nk * sizeof *k);
    float *v = malloc(nv * sizeof *v), *o = malloc(no * sizeof *o);
    double *want = malloc(no * sizeof *want);
    if (!q || !k || !v || !o || !want) {
        fprintf(stderr, "out of memory\n");
        return 1;
    }
    fill(q, nq, 1);
    fill(k, nk, 2);
    fill(v, nv, 3);

    int32_t rc = tfmc_sdpa(q, k, v, o, B, H, P, E, M, F);
    if (rc != 0) {
        printf("tfmc_sdpa failed: code %d, %s at site %d\n", (int)rc, fail_kind_name(rc), (int)(rc >> 8));
        return 1;
    }
    double checksum = 0.0;
    for (size_t i = 0; i < no; i++) checksum += o[i];
    printf("tfmc_sdpa: O[%d, %d, %d, %d], checksum %.6f\n", B, H, P, F, checksum);

    reference(q, k, v, want);
    double diff = 0.0;
    for (size_t i = 0; i < no; i++) {
        double d = fabs((double)o[i] - want[i]);
        if (isnan(d) || d > diff) diff = d; /* a NaN sticks */
    }
    printf("max abs diff %.3e\n", diff);

    /* A negative dim is refused before anything is read or written; the code's site is the
     * check of that dim (site 2: "dim P is negative or larger than 2^40"). */
    int32_t bad = tfmc_sdpa(q, k, v, o, B, H, -1, E, M, F);
    printf("negative dim: code %d, %s at site %d\n", (int)bad, fail_kind_name(bad), (int)(bad >> 8));

    /* So is a NULL pointer (here the output). */
    int32_t null = tfmc_sdpa(q, k, v, NULL, B, H, P, E, M, F);
    printf("NULL output: code %d, %s\n", (int)null, fail_kind_name(null));

    int ok = diff <= TOL && (bad & 0xff) == TFMC_FAIL_BAD_DIMS && (bad >> 8) == 2 && null == TFMC_FAIL_NULL_POINTER;
    printf("%s\n", ok ? "OK" : "FAIL");
    free(q);
    free(k);
    free(v);
    free(o);
    free(want);
    return ok ? 0 : 1;
}
