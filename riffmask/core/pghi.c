/* The heap integration of riffmask/core/phase.py (_integrate), step for step and with the same
 * rounding: a step is computed in double from the float32 sum of two gradients, and the phase is
 * rounded to float32 once per cell. Compiled on first use into the user's cache folder and called
 * through ctypes, so that decoding one image loads no JIT compiler. */
#include <stdint.h>
#include <stdlib.h>

int riffmask_pghi_integrate(const int64_t *level, const float *dphi_dt, const float *dphi_dk, float *phase,
                            int64_t n_t, int64_t n_k, int64_t levels) {
    static const int64_t steps[4][2] = {{1, 0}, {-1, 0}, {0, 1}, {0, -1}};
    const int64_t size = n_t * n_k;
    int64_t *seed_head = malloc(sizeof(int64_t) * (size_t)levels);
    int64_t *head = malloc(sizeof(int64_t) * (size_t)levels);
    int64_t *seed_next = malloc(sizeof(int64_t) * (size_t)(size ? size : 1));
    int64_t *next = malloc(sizeof(int64_t) * (size_t)(size ? size : 1));
    unsigned char *done = calloc((size_t)(size ? size : 1), 1);
    if (!seed_head || !head || !seed_next || !next || !done) {
        free(seed_head), free(head), free(seed_next), free(next), free(done);
        return -1;
    }
    for (int64_t b = 0; b < levels; b++) seed_head[b] = head[b] = -1;
    for (int64_t cell = 0; cell < size; cell++) {
        int64_t b = level[cell];
        if (b >= 0) {
            seed_next[cell] = seed_head[b];
            seed_head[b] = cell;
        }
    }
    for (int64_t seed_bucket = levels - 1; seed_bucket >= 0; seed_bucket--) {
        for (int64_t seed = seed_head[seed_bucket]; seed != -1; seed = seed_next[seed]) {
            if (done[seed]) continue;
            done[seed] = 1;
            phase[seed] = 0.0f;
            int64_t top = seed_bucket;
            head[top] = seed;
            next[seed] = -1;
            while (top >= 0) {
                int64_t cur = head[top];
                if (cur == -1) {
                    top--;
                    continue;
                }
                head[top] = next[cur];
                int64_t t = cur / n_k, k = cur - t * n_k;
                for (int d = 0; d < 4; d++) {
                    int64_t dt = steps[d][0], dk = steps[d][1], tt = t + dt, kk = k + dk;
                    if (tt < 0 || tt >= n_t || kk < 0 || kk >= n_k) continue;
                    int64_t other = tt * n_k + kk, b = level[other];
                    if (done[other] || b < 0) continue;
                    double step = dt != 0 ? 0.5 * (double)(dphi_dt[cur] + dphi_dt[other]) * (double)dt
                                          : 0.5 * (double)(dphi_dk[cur] + dphi_dk[other]) * (double)dk;
                    phase[other] = (float)((double)phase[cur] + step);
                    done[other] = 1;
                    next[other] = head[b];
                    head[b] = other;
                    if (b > top) top = b;
                }
            }
        }
    }
    free(seed_head), free(head), free(seed_next), free(next), free(done);
    return 0;
}
