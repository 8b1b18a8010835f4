// A MeshGraphNets MLP in one pass over rows, forward and backward, float32, AVX-512: the split first Linear
// (with optional gathered node projections: an edge's W_s x_s + W_r x_r, each node projected once), ReLUs, later
// Linears, optional LayerNorm, residual, and the sum of the output into receivers; a forward call runs a sequence
// of such passes (Forward) with one team of threads. Built and called by gnnsim/nn/cpu_kernel.py.
//
// Forward: rows go in blocks of RB = 12. Each Linear runs as H / 32 panels of 32 output columns: the 12 x 32
// panel's 24 accumulators stay in registers while the inner loop broadcasts one input value per row and
// multiplies it with one 32-wide row of the transposed weight; where H % 128 == 0 and K % 32 == 0, one level of
// Strassen's algorithm does the block's product in 7 / 8 of the multiplications instead (strassen_product).
// The block's activations stay in a 12 x H stack buffer (L1); LayerNorm, residual and scatter read the last one
// from there; while a block computes, the cache lines of the next block (its inputs, gathered rows, outputs and
// receivers' sums) are fetched, one per step of the products' inner loops (Ahead). Backward: chunks of CH = 96
// rows, last layer first; weight gradients are g^T x over the chunk's rows, input gradients g W; the next
// chunk's lines are fetched the same way.
// Threads take contiguous blocks (static schedule: the same sums in the same order every run); each sums into
// private buffers that are then added up.
#include <immintrin.h>
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define RB 12

typedef struct {
    __m512 v[RB][2];
} Acc;

// Cache lines the next block of rows (or the backward's next chunk) will read or write: its inputs, gathered
// table rows, outputs, receivers' sums, fetched one per step of this block's inner product loops, so that the
// next block starts on lines in L1.
// A line to be written carries 1 in its address's low bit.
#define AHEAD_MAX 1024  // a forward block's lines (the backward's chunks keep a larger list on the heap)
typedef struct {
    uintptr_t *line;
    int64_t n, next, capacity;
} Ahead;

// rows [first, first + count) of a [., width] matrix (none where count <= 0)
static void ahead_rows(Ahead *a, const float *matrix, int64_t first, int64_t count, int64_t width, int write) {
    if (count <= 0) return;
    const uintptr_t from = (uintptr_t)(matrix + first * width), to = (uintptr_t)(matrix + (first + count) * width);
    for (uintptr_t p = from & ~(uintptr_t)63; p < to && a->n < a->capacity; p += 64)
        a->line[a->n++] = p | (uintptr_t)write;
}

static inline __attribute__((always_inline)) void ahead_step(Ahead *a) {
    if (a && a->next < a->n) {
        const uintptr_t p = a->line[a->next++];
        if (p & 1)
            __builtin_prefetch((const void *)(p - 1), 1, 3);
        else
            __builtin_prefetch((const void *)p, 0, 3);
    }
}

// acc[r] += a_rows[r][0:k] @ w[0:k, 0:32] (w's rows ldw apart)
static inline __attribute__((always_inline)) void acc_gemm(Acc *acc, const float *const *a_rows, int64_t k_len,
                                                           const float *w, int64_t ldw, Ahead *ahead) {
    for (int64_t k = 0; k < k_len; k++) {
        ahead_step(ahead);
        __m512 w0 = _mm512_loadu_ps(w + k * ldw), w1 = _mm512_loadu_ps(w + k * ldw + 16);
#pragma GCC unroll 12
        for (int r = 0; r < RB; r++) {
            __m512 a = _mm512_set1_ps(a_rows[r][k]);
            acc->v[r][0] = _mm512_fmadd_ps(a, w0, acc->v[r][0]);
            acc->v[r][1] = _mm512_fmadd_ps(a, w1, acc->v[r][1]);
        }
    }
}

static inline __attribute__((always_inline)) void acc_store(const Acc *acc, float *dst, int64_t ld, int relu) {
    __m512 z = _mm512_setzero_ps();
    for (int r = 0; r < RB; r++) {
        __m512 v0 = acc->v[r][0], v1 = acc->v[r][1];
        if (relu) {
            v0 = _mm512_max_ps(v0, z);
            v1 = _mm512_max_ps(v1, z);
        }
        _mm512_storeu_ps(dst + r * ld, v0);
        _mm512_storeu_ps(dst + r * ld + 16, v1);
    }
}

// The backward pass's product, over blocks of RB rows: out[r, :] = init[r, :] (or 0 when init is NULL) +
// g[r, 0:k] @ w[0:k, :] for r < n; out and init have ``cols`` columns (a multiple of 32), w's rows are ldw
// apart, and zero_row holds at least max(k, cols) zeros (a ragged block's padding).
static void rows_product(const float *g, int64_t n, int64_t k, const float *w, int64_t ldw, int64_t cols,
                         const float *init, float *out, const float *zero_row, Ahead *ahead) {
    const float *a_rows[RB];
    for (int64_t b = 0; b < n; b += RB) {
        const int m = n - b < RB ? (int)(n - b) : RB;
        for (int r = 0; r < RB; r++) a_rows[r] = r < m ? g + (b + r) * k : zero_row;
        for (int64_t p = 0; p < cols / 32; p++) {
            Acc acc;
            for (int r = 0; r < RB; r++) {
                const float *from = init && r < m ? init + (b + r) * cols + p * 32 : zero_row;
                acc.v[r][0] = _mm512_loadu_ps(from);
                acc.v[r][1] = _mm512_loadu_ps(from + 16);
            }
            acc_gemm(&acc, a_rows, k, w + p * 32, ldw, ahead);
            for (int r = 0; r < m; r++) {
                _mm512_storeu_ps(out + (b + r) * cols + p * 32, acc.v[r][0]);
                _mm512_storeu_ps(out + (b + r) * cols + p * 32 + 16, acc.v[r][1]);
            }
        }
    }
}

// dst[0:n] = src[0:n] (n a multiple of 16) for a backward pass much later: past the caches when dst is aligned
static inline void save(float *dst, const float *src, int64_t n) {
    if ((uintptr_t)dst % 64 == 0)
        for (int64_t c = 0; c < n; c += 16) _mm512_stream_ps(dst + c, _mm512_loadu_ps(src + c));
    else
        memcpy(dst, src, n * sizeof(float));
}

// The calling thread's scratch memory, kept between calls (a fresh large block per call would cost page faults)
static void *scratch(size_t bytes) {
    static _Thread_local void *block = NULL;
    static _Thread_local size_t capacity = 0;
    if (bytes > capacity) {
        free(block);
        block = malloc(bytes);
        capacity = block ? bytes : 0;
    }
    return block;
}

// The first Linear's start: c[r, :] = bias (or 0) + sum_j table[index[j][row], j] for the block's rows (the
// table [N, J, H] holds each node's J projections; a ragged block repeats its last row)
static void block_init(float *c, int64_t h, const float *bias, const float *table, const int64_t *const *index,
                       int32_t count, int64_t r0, int64_t nr) {
    for (int r = 0; r < RB; r++) {
        const int64_t row = r0 + (r < nr ? r : nr - 1);
        for (int64_t col = 0; col < h; col += 16) {
            __m512 v = bias ? _mm512_loadu_ps(bias + col) : _mm512_setzero_ps();
            for (int32_t j = 0; j < count; j++)
                v = _mm512_add_ps(v, _mm512_loadu_ps(table + (index[j][row] * count + j) * h + col));
            _mm512_storeu_ps(c + r * h + col, v);
        }
    }
}

// One level of Strassen's algorithm where K % 32 == 0 and H % 128 == 0: the 12 x K block A, the K x H weight B
// and the 12 x H result C split in 2 x 2 quadrants (6 rows, K / 2 and H / 2 columns), and C += A B costs seven
// quadrant products instead of eight. The weight's seven combinations T_j are made once per call
// (pack_tile); the block's seven S_j here; each product S_j T_j is added to or subtracted from one or
// two quadrants of C. Products run as 6 x 64 panels, 24 accumulators.
#define SR (RB / 2)
#define MAX_K 1024  // widest input the Strassen path takes (its combinations live on the stack)

typedef struct {
    __m512 v[SR][4];
} Panel;

enum { ADD, SUB, FIRST, LAST, NONE };

// dst (6 x 64, rows ld apart) += or -= acc. FIRST: dst = acc + bias instead where bias is given (the quadrant's
// first product); LAST: then ReLU where relu is set (its last).
static inline __attribute__((always_inline)) void panel_write(float *dst, int64_t ld, const Panel *acc, int op,
                                                              const float *bias, int relu) {
    __m512 b[4];
    for (int v = 0; v < 4; v++) b[v] = op == FIRST && bias ? _mm512_loadu_ps(bias + 16 * v) : _mm512_setzero_ps();
#pragma GCC unroll 6
    for (int r = 0; r < SR; r++)
#pragma GCC unroll 4
        for (int v = 0; v < 4; v++) {
            float *d = dst + r * ld + 16 * v;
            __m512 x = op == FIRST && bias ? b[v] : _mm512_loadu_ps(d);
            x = op == SUB ? _mm512_sub_ps(x, acc->v[r][v]) : _mm512_add_ps(x, acc->v[r][v]);
            _mm512_storeu_ps(d, op == LAST && relu ? _mm512_max_ps(x, _mm512_setzero_ps()) : x);
        }
}

// where S_j T_j goes: C11 = M1 + M4 - M5 + M7, C12 = M3 + M5, C21 = M2 + M4, C22 = M1 - M2 + M3 + M6 (quadrant
// 0 C11, 1 C12, 2 C21, 3 C22), each quadrant's first and last product marked
static const int8_t strassen_to[7][2] = {{0, 3}, {2, 3}, {1, 3}, {0, 2}, {0, 1}, {3, 3}, {0, 0}};
static const int8_t strassen_op[7][2] = {{FIRST, FIRST}, {FIRST, SUB}, {FIRST, ADD}, {ADD, LAST}, {SUB, LAST},
                                         {LAST, NONE}, {LAST, NONE}};

static void strassen_product(float *c, int64_t h, const float *const *a_rows, int64_t k, const float *t,
                             const float *bias, int relu, Ahead *ahead) {
    const int64_t k2 = k / 2, h2 = h / 2, st = SR * k2;
    float s[5 * SR * (MAX_K / 2)];  // [5][SR, K / 2]: A11 + A22, A21 + A22, A11 + A12, A21 - A11, A12 - A22
    for (int r = 0; r < SR; r++)
        for (int64_t i = 0; i < k2; i += 16) {
            const float *top = a_rows[r] + i, *bot = a_rows[r + SR] + i;
            __m512 a11 = _mm512_loadu_ps(top), a12 = _mm512_loadu_ps(top + k2);
            __m512 a21 = _mm512_loadu_ps(bot), a22 = _mm512_loadu_ps(bot + k2);
            float *d = s + r * k2 + i;
            _mm512_storeu_ps(d, _mm512_add_ps(a11, a22));
            _mm512_storeu_ps(d + st, _mm512_add_ps(a21, a22));
            _mm512_storeu_ps(d + 2 * st, _mm512_add_ps(a11, a12));
            _mm512_storeu_ps(d + 3 * st, _mm512_sub_ps(a21, a11));
            _mm512_storeu_ps(d + 4 * st, _mm512_sub_ps(a12, a22));
        }
    static const int8_t combination[7] = {0, 1, -1, -2, 2, 3, 4};  // S_j in s, or -1 A11, -2 A22 in place
    for (int j = 0; j < 7; j++) {
        const float *a[SR];
        for (int r = 0; r < SR; r++)
            a[r] = combination[j] >= 0 ? s + combination[j] * st + r * k2
                 : combination[j] == -1 ? a_rows[r] : a_rows[r + SR] + k2;
        for (int64_t p = 0; p < h2; p += 64) {
            Panel acc;
            for (int r = 0; r < SR; r++)
                for (int v = 0; v < 4; v++) acc.v[r][v] = _mm512_setzero_ps();
            const float *b = t + j * k2 * h2 + p;
            for (int64_t i = 0; i < k2; i++) {
                ahead_step(ahead);
                const float *bi = b + i * h2;
                __m512 b0 = _mm512_loadu_ps(bi), b1 = _mm512_loadu_ps(bi + 16);
                __m512 b2 = _mm512_loadu_ps(bi + 32), b3 = _mm512_loadu_ps(bi + 48);
#pragma GCC unroll 6
                for (int r = 0; r < SR; r++) {
                    __m512 x = _mm512_set1_ps(a[r][i]);
                    acc.v[r][0] = _mm512_fmadd_ps(x, b0, acc.v[r][0]);
                    acc.v[r][1] = _mm512_fmadd_ps(x, b1, acc.v[r][1]);
                    acc.v[r][2] = _mm512_fmadd_ps(x, b2, acc.v[r][2]);
                    acc.v[r][3] = _mm512_fmadd_ps(x, b3, acc.v[r][3]);
                }
            }
#pragma GCC unroll 2
            for (int e = 0; e < 2; e++) {
                const int q = strassen_to[j][e], op = strassen_op[j][e];
                if (op == NONE) continue;
                const int64_t col = (q % 2) * h2 + p;
                panel_write(c + (q / 2) * SR * h + col, h, &acc, op, bias ? bias + col : NULL, relu);
            }
        }
    }
}

// c [RB, H] = bias + a @ wt (bias NULL: c += a @ wt) for the block's rows a_rows [RB][K], then ReLU where relu is
// set: Strassen where t (wt's combinations) is given, else 12 x 32 panels
static void block_linear(float *c, int64_t h, const float *const *a_rows, int64_t k, const float *wt,
                         const float *t, const float *bias, int relu, Ahead *ahead) {
    if (t) {
        strassen_product(c, h, a_rows, k, t, bias, relu, ahead);
        return;
    }
    for (int64_t p = 0; p < h / 32; p++) {
        Acc acc;
        for (int r = 0; r < RB; r++) {
            acc.v[r][0] = bias ? _mm512_loadu_ps(bias + p * 32) : _mm512_loadu_ps(c + r * h + p * 32);
            acc.v[r][1] = bias ? _mm512_loadu_ps(bias + p * 32 + 16) : _mm512_loadu_ps(c + r * h + p * 32 + 16);
        }
        acc_gemm(&acc, a_rows, k, wt + p * 32, h, ahead);
        acc_store(&acc, c + p * 32, h, relu);
    }
}

static int strassen_fits(int64_t k, int64_t h) { return k % 32 == 0 && k <= MAX_K && h % 128 == 0; }

// One weight matrix for the forward pass: [N, K] in row blocks of bh rows (src[b], rows ld[b] apart), packed
// either as its transpose t [K, N] or, where strassen_fits, as the seven combinations c [7][K / 2][N / 2] of its
// transpose B's quadrants: B11 + B22, B11, B12 - B22, B21 - B11, B22, B11 + B12, B21 + B22 (the other NULL)
typedef struct {
    const float *src[8];
    int64_t ld[8], bh, k, n;
    float *t, *c;
} Matrix;

static const float *matrix_row(const Matrix *x, int64_t row) {
    return x->src[row / x->bh] + row % x->bh * x->ld[row / x->bh];
}

// r[c][j] = r[j][c]: a 16 x 16 transpose in registers (pairs, then quads within 128-bit lanes, then the lanes)
static inline __attribute__((always_inline)) void transpose16(__m512 r[16]) {
    __m512 t[16];
    for (int i = 0; i < 16; i += 2) {
        t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
    }
    for (int i = 0; i < 16; i += 4) {  // r[i + e]: element e of each lane of rows i .. i + 3
        r[i] = _mm512_shuffle_ps(t[i], t[i + 2], 0x44);
        r[i + 1] = _mm512_shuffle_ps(t[i], t[i + 2], 0xEE);
        r[i + 2] = _mm512_shuffle_ps(t[i + 1], t[i + 3], 0x44);
        r[i + 3] = _mm512_shuffle_ps(t[i + 1], t[i + 3], 0xEE);
    }
    for (int e = 0; e < 4; e++) {
        const __m512 v0 = _mm512_shuffle_f32x4(r[e], r[4 + e], 0x88), v1 = _mm512_shuffle_f32x4(r[e], r[4 + e], 0xDD);
        const __m512 v2 = _mm512_shuffle_f32x4(r[8 + e], r[12 + e], 0x88);
        const __m512 v3 = _mm512_shuffle_f32x4(r[8 + e], r[12 + e], 0xDD);
        t[e] = _mm512_shuffle_f32x4(v0, v2, 0x88);
        t[4 + e] = _mm512_shuffle_f32x4(v1, v3, 0x88);
        t[8 + e] = _mm512_shuffle_f32x4(v0, v2, 0xDD);
        t[12 + e] = _mm512_shuffle_f32x4(v1, v3, 0xDD);
    }
    for (int i = 0; i < 16; i++) r[i] = t[i];
}

// dst[c * ldd + j] = src[j * ld + c] for j < 16, c < min(k, 16)
static void transpose_tile(float *dst, int64_t ldd, const float *src, int64_t ld, int64_t k) {
    const __mmask16 cols = k >= 16 ? 0xFFFF : (__mmask16)((1u << k) - 1);
    __m512 r[16];
    for (int j = 0; j < 16; j++) r[j] = _mm512_maskz_loadu_ps(cols, src + j * ld);
    transpose16(r);
    for (int64_t c = 0; c < k && c < 16; c++) _mm512_storeu_ps(dst + c * ldd, r[c]);
}

// The packed form's 16 x 16 tiles: of t, or of each of c's seven combinations
static int64_t pack_tiles(const Matrix *x) { return x->c ? x->k / 32 * (x->n / 32) : (x->k + 15) / 16 * (x->n / 16); }

static void pack_tile(const Matrix *x, int64_t tile) {
    if (!x->c) {
        const int64_t kt = (x->k + 15) / 16, j0 = tile / kt * 16, c0 = tile % kt * 16;
        transpose_tile(x->t + c0 * x->n + j0, x->n, matrix_row(x, j0) + c0, x->ld[j0 / x->bh], x->k - c0);
        return;
    }
    const int64_t k2 = x->k / 2, n2 = x->n / 2, st = k2 * n2, i0 = tile % (k2 / 16) * 16, j0 = tile / (k2 / 16) * 16;
    float q[4][16 * 16];  // B11, B12, B21, B22's tiles: B_ab is W's rows b N / 2 + j, columns a K / 2 + i
    for (int a = 0; a < 2; a++)
        for (int b = 0; b < 2; b++) {
            const int64_t row = b * n2 + j0;
            transpose_tile(q[2 * a + b], 16, matrix_row(x, row) + a * k2 + i0, x->ld[row / x->bh], 16);
        }
    for (int i = 0; i < 16; i++) {
        const __m512 b11 = _mm512_loadu_ps(q[0] + 16 * i), b12 = _mm512_loadu_ps(q[1] + 16 * i);
        const __m512 b21 = _mm512_loadu_ps(q[2] + 16 * i), b22 = _mm512_loadu_ps(q[3] + 16 * i);
        float *d = x->c + (i0 + i) * n2 + j0;
        _mm512_storeu_ps(d, _mm512_add_ps(b11, b22));
        _mm512_storeu_ps(d + st, b11);
        _mm512_storeu_ps(d + 2 * st, _mm512_sub_ps(b12, b22));
        _mm512_storeu_ps(d + 3 * st, _mm512_sub_ps(b21, b11));
        _mm512_storeu_ps(d + 4 * st, b22);
        _mm512_storeu_ps(d + 5 * st, _mm512_add_ps(b11, b12));
        _mm512_storeu_ps(d + 6 * st, _mm512_add_ps(b21, b22));
    }
}

// Whether the Linears' output widths (num_layers + 1 of them) suit the kernel: multiples of 32; their largest
static int64_t check_widths(const int64_t *widths, int32_t num_layers) {
    int64_t most = 0;
    for (int32_t l = 0; l <= num_layers; l++) {
        if (widths[l] <= 0 || widths[l] % 32 != 0) return 0;
        if (widths[l] > most) most = widths[l];
    }
    return most;
}

// One MLP's forward pass: its arguments
typedef struct {
    int64_t rows;                                                   // R
    const int64_t *widths;                                          // each Linear's output width H_l (% 32)
    int32_t num_inputs;
    const float *const *inputs;                                     // [R, K_i] each
    const int64_t *in_widths;                                       // K_i
    const float *const *first_weights;                              // [H_0, K_i] each, rows first_ld[i] apart
    const int64_t *first_ld;
    const float *first_bias;                                        // [H_0] or NULL
    int32_t gather_count;                                           // J gathered projections, or 0
    const float *nodes;                                             // [M, F]
    int64_t num_gather, node_width;                                 // M, F
    const float *const *gather_weights;                             // [H_0, F] each, rows gather_ld[j] apart
    const int64_t *gather_ld;
    const int64_t *const *gather_index;                             // [R] each: add nodes[index] @ weight^T
    int32_t num_layers;
    const float *const *weights, *const *biases;                    // later Linears: [H_l, H_l-1], [H_l]
    const float *norm_weight, *norm_bias;                           // LayerNorm, or NULL weight: none
    float eps;
    const float *residual;                                          // [R, H] added to the output, or NULL
    float *out;                                                     // [R, H]
    const int64_t *receivers;                                       // [R]: sum each output row into incoming
    float *incoming;                                                // [N, H], or NULL: no sum
    int64_t num_nodes;                                              // N
    float *const *acts;                                             // saved for a backward pass, or NULL:
    float *pre_norm, *mean, *rstd;                                  // post-ReLU [R, H_l], LayerNorm in, stats
} Forward;

#define MAX_MATRICES (8 + 16 + 1)  // inputs, later Linears, gathered projections

// What a forward pass works on: each weight's packed form (the panels read one row of 32 output columns per
// input column; Strassen's products its combinations), the gathered projections as one matrix [J H_0, F]
// whose products with the nodes fill the table [M, J, H_0], and the other threads' sums into receivers.
typedef struct {
    Matrix mat[MAX_MATRICES];
    int32_t matrices;
    int64_t first_tile[MAX_MATRICES + 1];  // the packing's work items: 16 x 16 tiles, first_tile[m] of matrix m on
    int64_t tiles, h, h0, jh, wmax, floats, inc_size;  // h: the output width; h0: the first Linear's
    float *table, *sums;
} Plan;

// Fill p for a, its scratch laid out from wt (NULL: sizes only); returns 0, or 1 when the arguments are out of
// the kernel's range.
static int plan_forward(const Forward *a, Plan *p, float *wt) {
    p->wmax = a->num_layers >= 0 && a->num_layers <= 16 ? check_widths(a->widths, a->num_layers) : 0;
    if (!p->wmax || a->num_inputs < 1 || a->num_inputs > 8 || a->gather_count < 0 || a->gather_count > 8) return 1;
    p->h = a->widths[a->num_layers];
    p->h0 = a->widths[0];
    p->jh = a->gather_count * p->h0;
    p->matrices = a->num_inputs + a->num_layers + (a->gather_count > 0);
    int64_t at = a->gather_count ? a->num_gather * p->jh : 0;  // floats into the scratch: the table first
    p->table = wt;
    p->tiles = 0;
    for (int32_t m = 0; m < p->matrices; m++) {
        Matrix *x = &p->mat[m];
        if (m < a->num_inputs) {
            *x = (Matrix){.src = {a->first_weights[m]}, .ld = {a->first_ld[m]}, .bh = p->h0, .k = a->in_widths[m],
                          .n = p->h0};
        } else if (m < a->num_inputs + a->num_layers) {
            const int64_t l = m - a->num_inputs, k = a->widths[l], n = a->widths[l + 1];
            *x = (Matrix){.src = {a->weights[l]}, .ld = {k}, .bh = n, .k = k, .n = n};
        } else {
            *x = (Matrix){.bh = p->h0, .k = a->node_width, .n = p->jh};
            for (int32_t j = 0; j < a->gather_count; j++) {
                x->src[j] = a->gather_weights[j];
                x->ld[j] = a->gather_ld[j];
            }
        }
        const int strassen = strassen_fits(x->k, x->n);
        x->t = wt && !strassen ? wt + at : NULL;
        x->c = wt && strassen ? wt + at : NULL;
        at += strassen ? 7 * x->k / 2 * x->n / 2 : x->k * x->n;
        p->first_tile[m] = p->tiles;
        p->tiles += pack_tiles(x);
    }
    p->first_tile[p->matrices] = p->tiles;
    p->sums = wt ? wt + at : NULL;
    p->inc_size = a->incoming ? a->num_nodes * p->h : 0;
    p->floats = at;
    return 0;
}

// Pack p's weights: a work-sharing loop of the calling team, without the barrier at its end (the caller's next
// one ends it)
static void pack_plan(const Plan *p) {
#pragma omp for schedule(dynamic, 8) nowait
    for (int64_t item = 0; item < p->tiles; item++) {
        int32_t m = 0;
        while (item >= p->first_tile[m + 1]) m++;
        pack_tile(&p->mat[m], item - p->first_tile[m]);
    }
}

// One forward pass (its weights packed), run by every thread of the calling team (its loops are the team's
// work-sharing loops). A thread done with its rows packs the next pass's weights (where given): the work fills
// the wait for the other threads.
static void forward_team(const Forward *a, const Plan *p, const Plan *coming, int *bad) {
    const int64_t rows = a->rows, h = p->h, h0 = p->h0, jh = p->jh, wmax = p->wmax;
    const int64_t blocks = (rows + RB - 1) / RB;
    const int32_t num_inputs = a->num_inputs, gather_count = a->gather_count, num_layers = a->num_layers;
    const float *const *inputs = a->inputs, *first_bias = a->first_bias, *nodes = a->nodes;
    const int64_t *in_widths = a->in_widths, num_gather = a->num_gather, node_width = a->node_width;
    const int64_t *const *gather_index = a->gather_index, *receivers = a->receivers, num_nodes = a->num_nodes;
    const float *const *biases = a->biases, *norm_weight = a->norm_weight, *norm_bias = a->norm_bias;
    const float *residual = a->residual, eps = a->eps;
    float *out = a->out, *incoming = a->incoming, *const *acts = a->acts, *pre_norm = a->pre_norm;
    float *mean = a->mean, *rstd = a->rstd, *table = p->table, *next = p->sums;
    const int64_t inc_size = p->inc_size;
    const Matrix *mat = p->mat, *gathered = gather_count ? &mat[p->matrices - 1] : NULL;
    const float *a_rows[RB];
    uintptr_t lines[AHEAD_MAX];
    Ahead ahead = {.line = lines, .capacity = AHEAD_MAX};
    if (gathered) {  // the table: each node's J projections
        float zeros[jh], proj[RB * jh];
        memset(zeros, 0, sizeof(zeros));
#pragma omp for schedule(static)
        for (int64_t blk = 0; blk < (num_gather + RB - 1) / RB; blk++) {
            const int64_t r0 = blk * RB, nr = num_gather - r0 < RB ? num_gather - r0 : RB;
            for (int r = 0; r < RB; r++) a_rows[r] = nodes + (r0 + (r < nr ? r : nr - 1)) * node_width;
            ahead.n = ahead.next = 0;
            const int64_t coming = num_gather - r0 - RB < RB ? num_gather - r0 - RB : RB;
            ahead_rows(&ahead, nodes, r0 + RB, coming, node_width, 0);
            block_linear(proj, jh, a_rows, node_width, gathered->t, gathered->c, zeros, 0, &ahead);
            memcpy(table + r0 * jh, proj, sizeof(float) * nr * jh);
        }
    }
    float buf[2][RB * wmax];
    const int t = omp_get_thread_num();
    float *inc = !incoming ? NULL : t == 0 ? incoming : next + (t - 1) * inc_size;
    if (inc) memset(inc, 0, sizeof(float) * num_nodes * h);
#pragma omp for schedule(static) nowait
    for (int64_t blk = 0; blk < blocks; blk++) {
        const int64_t r0 = blk * RB, nr = rows - r0 < RB ? rows - r0 : RB;
        int ok = 1;  // the kernel reads and writes only where the indices say: check them first
        for (int64_t row = r0; row < r0 + nr; row++) {
            for (int32_t j = 0; j < gather_count; j++)
                ok &= gather_index[j][row] >= 0 && gather_index[j][row] < num_gather;
            if (inc) ok &= receivers[row] >= 0 && receivers[row] < num_nodes;
        }
        if (!ok) {
#pragma omp atomic write
            *bad = 1;
            continue;
        }
        ahead.n = ahead.next = 0;  // the next block's lines
        const int64_t n0 = r0 + RB, nn = rows - n0 < RB ? rows - n0 : RB;
        for (int32_t i = 0; i < num_inputs; i++) ahead_rows(&ahead, inputs[i], n0, nn, in_widths[i], 0);
        for (int64_t row = n0; row < n0 + nn; row++) {
            for (int32_t j = 0; j < gather_count; j++)
                if (gather_index[j][row] >= 0 && gather_index[j][row] < num_gather)
                    ahead_rows(&ahead, table, gather_index[j][row] * gather_count + j, 1, h0, 0);
            if (inc && receivers[row] >= 0 && receivers[row] < num_nodes)
                ahead_rows(&ahead, inc, receivers[row], 1, h, 1);
        }
        if (residual && residual != inputs[0]) ahead_rows(&ahead, residual, n0, nn, h, 0);
        ahead_rows(&ahead, out, n0, nn, h, 1);
        // first Linear: bias and gathered projections, plus the inputs' products
        const int init = gather_count || !first_bias;
        if (init) block_init(buf[0], h0, first_bias, table, gather_index, gather_count, r0, nr);
        for (int32_t i = 0; i < num_inputs; i++) {
            for (int r = 0; r < RB; r++) a_rows[r] = inputs[i] + (r0 + (r < nr ? r : nr - 1)) * in_widths[i];
            block_linear(buf[0], h0, a_rows, in_widths[i], mat[i].t, mat[i].c, i == 0 && !init ? first_bias : NULL,
                         i == num_inputs - 1 && num_layers > 0, &ahead);
        }
        // later Linears, ping-ponging between the two buffers (rows H_l-1 and H_l apart)
        int cur = 0;
        for (int32_t l = 0; l < num_layers; l++) {
            const Matrix *x = &mat[num_inputs + l];
            if (acts) save(acts[l] + r0 * x->k, buf[cur], nr * x->k);
            for (int r = 0; r < RB; r++) a_rows[r] = buf[cur] + r * x->k;
            block_linear(buf[1 - cur], x->n, a_rows, x->k, x->t, x->c, biases[l], l < num_layers - 1, &ahead);
            cur = 1 - cur;
        }
        // LayerNorm (biased variance, as torch), residual, sum into receivers
        for (int64_t r = 0; r < nr; r++) {
            float *y = buf[cur] + r * h;
            const int64_t row = r0 + r;
            if (pre_norm) save(pre_norm + row * h, y, h);
            if (norm_weight) {
                __m512 s = _mm512_setzero_ps();
                for (int64_t c = 0; c < h; c += 16) s = _mm512_add_ps(s, _mm512_loadu_ps(y + c));
                const float mu = _mm512_reduce_add_ps(s) / (float)h;
                const __m512 m = _mm512_set1_ps(mu);
                __m512 v = _mm512_setzero_ps();
                for (int64_t c = 0; c < h; c += 16) {
                    __m512 d = _mm512_sub_ps(_mm512_loadu_ps(y + c), m);
                    v = _mm512_fmadd_ps(d, d, v);
                }
                const float rs = 1.0f / sqrtf(_mm512_reduce_add_ps(v) / (float)h + eps);
                if (mean) {
                    mean[row] = mu;
                    rstd[row] = rs;
                }
                const __m512 s_rs = _mm512_set1_ps(rs);
                for (int64_t c = 0; c < h; c += 16) {
                    __m512 n = _mm512_mul_ps(_mm512_sub_ps(_mm512_loadu_ps(y + c), m), s_rs);
                    _mm512_storeu_ps(y + c, _mm512_fmadd_ps(n, _mm512_loadu_ps(norm_weight + c),
                                                            _mm512_loadu_ps(norm_bias + c)));
                }
            }
            float *o = out + row * h;
            const float *res = residual ? residual + row * h : NULL;
            float *dst = inc ? inc + receivers[row] * h : NULL;
            for (int64_t c = 0; c < h; c += 16) {
                __m512 n = _mm512_loadu_ps(y + c);
                _mm512_storeu_ps(o + c, res ? _mm512_add_ps(_mm512_loadu_ps(res + c), n) : n);
                if (dst) _mm512_storeu_ps(dst + c, _mm512_add_ps(_mm512_loadu_ps(dst + c), n));
            }
        }
    }
    if (coming) pack_plan(coming);
    _mm_sfence();  // the streamed saves are visible to whichever thread runs the backward pass
    const int team = omp_get_num_threads();  // OpenMP may give fewer than asked (nested, thread limits)
    if (incoming && team > 1) {  // add the other threads' sums into the first's
#pragma omp barrier
#pragma omp for schedule(static)
        for (int64_t row = 0; row < num_nodes; row++)
            for (int u = 1; u < team; u++)
                for (int64_t c = 0; c < h; c += 16) {
                    float *dst = incoming + row * h + c;
                    const float *src = next + (u - 1) * inc_size + row * h + c;
                    _mm512_storeu_ps(dst, _mm512_add_ps(_mm512_loadu_ps(dst), _mm512_loadu_ps(src)));
                }
    }
}

// Runs count forward passes in turn (one team of threads: no return to the caller between them; each pass may
// read the ones before). Returns 0; 1 when the arguments are out of the kernel's range; 2 out of memory; 3 an
// index out of range.
int gnnsim_mlp_forward(int32_t count, const Forward *runs, int32_t threads) {
    if (count < 1 || threads < 1) return 1;
    Plan *plans = malloc(sizeof(Plan) * count);
    if (!plans) return 2;
    int64_t most = 0;  // the passes' scratch blocks take the largest's size
    for (int32_t r = 0; r < count; r++) {
        if (plan_forward(&runs[r], &plans[r], NULL)) {
            free(plans);
            return 1;
        }
        const int64_t floats = plans[r].floats + (threads - 1) * plans[r].inc_size;  // + other threads' sums
        if (floats > most) most = floats;
    }
    // two of them when there are several passes: a pass packs its successor's weights into the other
    float *wt = scratch(sizeof(float) * most * (count > 1 ? 2 : 1));
    for (int32_t r = 0; wt && r < count; r++) plan_forward(&runs[r], &plans[r], wt + r % 2 * most);
    int bad = 0;
    if (wt)
#pragma omp parallel num_threads(threads)
    {
        pack_plan(&plans[0]);
#pragma omp barrier
        for (int32_t r = 0; r < count; r++) {
            forward_team(&runs[r], &plans[r], r + 1 < count ? &plans[r + 1] : NULL, &bad);
#pragma omp barrier  // the next pass may read this one's outputs; the one after reuses its scratch
        }
    }
    free(plans);
    return !wt ? 2 : bad ? 3 : 0;
}

#define CH (8 * RB)  // rows per backward chunk: the weight gradients' reduction length per pass

// acc[i] += sum_{r < n} g[r, i0 + i] * x[r, 0:32]: the weight gradient's product, read straight from g [n, ldg]
static inline __attribute__((always_inline)) void acc_gemm_t(Acc *acc, const float *g, int64_t ldg, int64_t n,
                                                             const float *x, int64_t ldx, Ahead *ahead) {
    for (int64_t r = 0; r < n; r++) {
        ahead_step(ahead);
        __m512 x0 = _mm512_loadu_ps(x + r * ldx), x1 = _mm512_loadu_ps(x + r * ldx + 16);
#pragma GCC unroll 12
        for (int i = 0; i < RB; i++) {
            __m512 a = _mm512_set1_ps(g[r * ldg + i]);
            acc->v[i][0] = _mm512_fmadd_ps(a, x0, acc->v[i][0]);
            acc->v[i][1] = _mm512_fmadd_ps(a, x1, acc->v[i][1]);
        }
    }
}

// grad_w[i, :] += sum_{r < n} g[r, i] * x[r, :] for i < h_out (g's rows h_out apart, x's ldx apart, k_in a
// multiple of 32). The last partial block of i reads its columns from g_pad (pad_tail) and stores only its rows.
static void weight_grad(float *grad_w, const float *g, int64_t h_out, const float *x, int64_t ldx, int64_t k_in,
                        int64_t n, const float *g_pad, Ahead *ahead) {
    for (int64_t i0 = 0; i0 < h_out; i0 += RB) {
        const int m = h_out - i0 < RB ? (int)(h_out - i0) : RB;
        const float *gi = m == RB ? g + i0 : g_pad;  // g_pad: the last columns copied, zero-padded to RB
        const int64_t ldg = m == RB ? h_out : RB;
        for (int64_t p = 0; p < k_in / 32; p++) {
            Acc acc;
            for (int i = 0; i < RB; i++) {
                acc.v[i][0] = i < m ? _mm512_loadu_ps(grad_w + (i0 + i) * k_in + p * 32) : _mm512_setzero_ps();
                acc.v[i][1] = i < m ? _mm512_loadu_ps(grad_w + (i0 + i) * k_in + p * 32 + 16) : _mm512_setzero_ps();
            }
            acc_gemm_t(&acc, gi, ldg, n, x + p * 32, ldx, ahead);
            for (int i = 0; i < m; i++) {
                _mm512_storeu_ps(grad_w + (i0 + i) * k_in + p * 32, acc.v[i][0]);
                _mm512_storeu_ps(grad_w + (i0 + i) * k_in + p * 32 + 16, acc.v[i][1]);
            }
        }
    }
}

// g's last h % RB columns, zero-padded to RB, rows RB apart (weight_grad's last partial block of rows)
static void pad_tail(float *g_pad, const float *g, int64_t h, int64_t n) {
    const int64_t i0 = h - h % RB;
    for (int64_t r = 0; r < n; r++)
        for (int i = 0; i < RB; i++) g_pad[r * RB + i] = i0 + i < h ? g[r * h + i0 + i] : 0.0f;
}

// column sums: acc[c] += sum_{r < n} g[r, c]
static void column_sum(float *acc, const float *g, int64_t n, int64_t h) {
    for (int64_t c = 0; c < h; c += 16) {
        __m512 s = _mm512_loadu_ps(acc + c);
        for (int64_t r = 0; r < n; r++) s = _mm512_add_ps(s, _mm512_loadu_ps(g + r * h + c));
        _mm512_storeu_ps(acc + c, s);
    }
}

// The backward pass of gnnsim_mlp_forward, from what it saved. Gradients of parameters and of the gathered
// projections ([M, J, H]: the caller takes them on to the nodes and projection weights) are summed per thread
// into workspaces [threads, ...] that the caller reduces; input gradients are written.
int gnnsim_mlp_backward(
    int64_t rows, const int64_t *widths,                            // as forward
    int32_t num_inputs, const float *const *inputs, const int64_t *in_widths,
    const float *const *first_weights, const int64_t *first_ld,     // [H_0, K_i] each, rows first_ld[i] apart
    int32_t gather_count, const int64_t *const *gather_index,     // as forward
    float *grad_table, int64_t num_gather,                          // [threads, M, J, H_0] or NULL
    int32_t num_layers, const float *const *weights,                // later Linears' weights [H_l, H_l-1]
    const float *norm_weight, const float *pre_norm, const float *mean, const float *rstd,  // or NULL: none
    const float *const *acts,                                       // post-ReLU activations [R, H_l-1] each
    const float *grad_out, const int64_t *receivers, const float *grad_incoming,  // [R, H]; [N, H] (NULL: none)
    int32_t residual,
    float *const *grad_inputs,                                      // [R, K_i] each, NULL where not needed
    float *grad_first_weights,  // [threads, sum_i H_0 K_i]
    float *grad_first_bias,     // [threads, H_0] or NULL
    float *grad_weights,        // [threads, sum_l H_l H_l-1]
    float *grad_biases,         // [threads, sum_l H_l]
    float *grad_norm,           // [threads, 2, H] (weight, bias) or NULL
    int32_t threads)
{
    const int64_t wmax = num_layers >= 0 ? check_widths(widths, num_layers) : 0;
    if (!wmax || num_inputs < 1 || num_inputs > 8 || threads < 1) return 1;
    const int64_t h = widths[num_layers], h0 = widths[0], chunks = (rows + CH - 1) / CH;
    int64_t k_total = 0, k_max = wmax, layer_w = 0, layer_b = 0;
    for (int32_t i = 0; i < num_inputs; i++) {
        if (in_widths[i] % 32 != 0) return 1;  // weight and input gradients go by 32-wide panels
        k_total += h0 * in_widths[i];
        if (in_widths[i] > k_max) k_max = in_widths[i];
    }
    for (int32_t l = 0; l < num_layers; l++) {
        layer_w += widths[l + 1] * widths[l];
        layer_b += widths[l + 1];
    }
    int failed = 0;
#pragma omp parallel num_threads(threads) reduction(| : failed)
    {
        const int t = omp_get_thread_num();
        float *g = malloc(sizeof(float) * CH * wmax), *g2 = malloc(sizeof(float) * CH * wmax);
        float *g_pad = malloc(sizeof(float) * CH * RB), *zero_row = calloc(k_max, sizeof(float));
        float *gw1 = grad_first_weights + t * k_total, *gb1 = grad_first_bias ? grad_first_bias + t * h0 : NULL;
        float *gws = grad_weights + t * layer_w, *gbs = grad_biases + t * layer_b;
        float *gn = grad_norm ? grad_norm + t * 2 * h : NULL;
        float *gtab = grad_table ? grad_table + t * num_gather * gather_count * h0 : NULL;
        int64_t row_floats = 2 * h;  // what one row reads and writes that is not in cache: its lines ahead
        for (int32_t l = 0; l < num_layers; l++) row_floats += widths[l];
        for (int32_t i = 0; i < num_inputs; i++) row_floats += 2 * in_widths[i];
        Ahead ahead = {.capacity = CH * (row_floats / 16 + 2 + 2 * num_inputs + num_layers)};
        ahead.line = malloc(sizeof(uintptr_t) * ahead.capacity);
        if (!g || !g2 || !g_pad || !zero_row || !ahead.line) failed = 1;
#pragma omp for schedule(static)
        for (int64_t chunk = 0; chunk < chunks; chunk++) {
            if (failed) continue;
            const int64_t r0 = chunk * CH, n = rows - r0 < CH ? rows - r0 : CH;
            ahead.n = ahead.next = 0;  // the next chunk's lines, fetched during this one's products
            const int64_t n0 = r0 + CH, nn = rows - n0 < CH ? rows - n0 : CH;
            ahead_rows(&ahead, grad_out, n0, nn, h, 0);
            if (norm_weight) ahead_rows(&ahead, pre_norm, n0, nn, h, 0);
            for (int32_t l = num_layers - 1; l >= 0; l--) ahead_rows(&ahead, acts[l], n0, nn, widths[l], 0);
            for (int32_t i = 0; i < num_inputs; i++) {
                ahead_rows(&ahead, inputs[i], n0, nn, in_widths[i], 0);
                if (grad_inputs[i]) ahead_rows(&ahead, grad_inputs[i], n0, nn, in_widths[i], 1);
            }
            // d loss / d LayerNorm output: the output's gradient plus, scattered, the receivers' sums'
            for (int64_t r = 0; r < n; r++) {
                const float *go = grad_out + (r0 + r) * h;
                const float *gi = grad_incoming ? grad_incoming + receivers[r0 + r] * h : NULL;
                for (int64_t c = 0; c < h; c += 16) {
                    __m512 v = _mm512_loadu_ps(go + c);
                    if (gi) v = _mm512_add_ps(v, _mm512_loadu_ps(gi + c));
                    _mm512_storeu_ps(g + r * h + c, v);
                }
            }
            if (norm_weight) {  // dx = rstd (dx^ - mean(dx^) - x^ mean(dx^ x^)), dx^ = g w, x^ = (x - mean) rstd
                for (int64_t r = 0; r < n; r++) {
                    const int64_t row = r0 + r;
                    const __m512 mu = _mm512_set1_ps(mean[row]), rs = _mm512_set1_ps(rstd[row]);
                    __m512 s1 = _mm512_setzero_ps(), s2 = _mm512_setzero_ps();
                    for (int64_t c = 0; c < h; c += 16) {
                        __m512 gv = _mm512_loadu_ps(g + r * h + c);
                        __m512 xh = _mm512_mul_ps(_mm512_sub_ps(_mm512_loadu_ps(pre_norm + row * h + c), mu), rs);
                        _mm512_storeu_ps(gn + c, _mm512_fmadd_ps(gv, xh, _mm512_loadu_ps(gn + c)));
                        _mm512_storeu_ps(gn + h + c, _mm512_add_ps(_mm512_loadu_ps(gn + h + c), gv));
                        __m512 dxh = _mm512_mul_ps(gv, _mm512_loadu_ps(norm_weight + c));
                        s1 = _mm512_add_ps(s1, dxh);
                        s2 = _mm512_fmadd_ps(dxh, xh, s2);
                    }
                    const __m512 m1 = _mm512_set1_ps(_mm512_reduce_add_ps(s1) / (float)h);
                    const __m512 m2 = _mm512_set1_ps(_mm512_reduce_add_ps(s2) / (float)h);
                    for (int64_t c = 0; c < h; c += 16) {
                        __m512 xh = _mm512_mul_ps(_mm512_sub_ps(_mm512_loadu_ps(pre_norm + row * h + c), mu), rs);
                        __m512 dxh = _mm512_mul_ps(_mm512_loadu_ps(g + r * h + c), _mm512_loadu_ps(norm_weight + c));
                        __m512 d = _mm512_sub_ps(_mm512_sub_ps(dxh, m1), _mm512_mul_ps(xh, m2));
                        _mm512_storeu_ps(g + r * h + c, _mm512_mul_ps(d, rs));
                    }
                }
            }
            // later Linears, last to first: weight and bias gradients, then back through the weight and ReLU
            int64_t w_at = layer_w, b_at = layer_b;  // layer l's gradients sit at the end, then before
            for (int32_t l = num_layers - 1; l >= 0; l--) {
                const int64_t out_w = widths[l + 1], in_w = widths[l];  // g: [n, out_w], rows out_w apart
                const float *act = acts[l] + r0 * in_w;
                w_at -= out_w * in_w;
                b_at -= out_w;
                pad_tail(g_pad, g, out_w, n);
                weight_grad(gws + w_at, g, out_w, act, in_w, in_w, n, g_pad, &ahead);
                column_sum(gbs + b_at, g, n, out_w);
                rows_product(g, n, out_w, weights[l], in_w, in_w, NULL, g2, zero_row, &ahead);
                for (int64_t r = 0; r < n; r++)  // ReLU's backward: pass where the activation was positive
                    for (int64_t c = 0; c < in_w; c += 16) {
                        __mmask16 pos = _mm512_cmp_ps_mask(_mm512_loadu_ps(act + r * in_w + c), _mm512_setzero_ps(),
                                                           _CMP_GT_OQ);
                        _mm512_storeu_ps(g + r * in_w + c,
                                         _mm512_maskz_mov_ps(pos, _mm512_loadu_ps(g2 + r * in_w + c)));
                    }
            }
            // first Linear: its bias, its weight blocks, the inputs (plus the residual's pass-through), the gathered
            // projections
            if (gb1) column_sum(gb1, g, n, h0);  // g: [n, H_0] from here
            pad_tail(g_pad, g, h0, n);
            float *gw = gw1;
            for (int32_t i = 0; i < num_inputs; i++) {
                const int64_t k = in_widths[i];
                weight_grad(gw, g, h0, inputs[i] + r0 * k, k, k, n, g_pad, &ahead);
                gw += h0 * k;
                if (grad_inputs[i])  // the residual passes the output's gradient to the first input (k == H)
                    rows_product(g, n, h0, first_weights[i], first_ld[i], k,
                                 i == 0 && residual ? grad_out + r0 * h : NULL, grad_inputs[i] + r0 * k, zero_row,
                                 &ahead);
            }
            if (gtab)
                for (int64_t r = 0; r < n; r++)
                    for (int32_t j = 0; j < gather_count; j++) {
                        float *dst = gtab + (gather_index[j][r0 + r] * gather_count + j) * h0;
                        for (int64_t c = 0; c < h0; c += 16)
                            _mm512_storeu_ps(dst + c, _mm512_add_ps(_mm512_loadu_ps(dst + c),
                                                                    _mm512_loadu_ps(g + r * h0 + c)));
                    }
        }
        free(g);
        free(g2);
        free(g_pad);
        free(zero_row);
        free(ahead.line);
    }
    return failed ? 2 : 0;
}
