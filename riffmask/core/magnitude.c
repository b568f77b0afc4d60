/* The common case of riffmask/core/magnitude.py (torch_abs) in one pass, written transposed: each
 * |z| computed in double from the exact squares, rounded to float32, and flagged when it lies so
 * near a midpoint between two floats that it must be recomputed by SLEEF's algorithm (in Python).
 * Built with -ffp-contract=off: a fused multiply-add would round re*re + im*im differently. */
#include <math.h>
#include <stdint.h>

#define BLOCK 16 /* rows written together, so each output column is filled BLOCK floats at a time */

int64_t riffmask_magnitude_transposed(const float *z, int64_t rows, int64_t cols, int64_t row_stride,
                                      double nudge, float *out, int64_t *hard, int64_t max_hard) {
    int64_t n_hard = 0;
    const double up = 1.0 + nudge, down = 1.0 - nudge;
    for (int64_t r0 = 0; r0 < rows; r0 += BLOCK) {
        const int64_t r1 = r0 + BLOCK < rows ? r0 + BLOCK : rows;
        for (int64_t c = 0; c < cols; c++) {
            for (int64_t r = r0; r < r1; r++) {
                const double re = z[2 * (r * row_stride + c)], im = z[2 * (r * row_stride + c) + 1];
                const double exact = sqrt(re * re + im * im);
                out[c * rows + r] = (float)exact;
                if ((float)(exact * up) != (float)(exact * down)) {
                    if (n_hard < max_hard) hard[n_hard] = r * cols + c;
                    n_hard++;
                }
            }
        }
    }
    return n_hard;
}
