// Causal softmax self-attention for XLA:CPU, as two FFI custom calls (forward, backward).
//
// Built and registered by cpu_ffi.py. XLA:CPU runs attention's batched score and value
// matmuls on one thread, each materialised between fusions; here every (batch, head) pair is one
// task on XLA's intra-op thread pool, and a task keeps its scores in a few rows at a time.
// Forward: S = (q / sqrt(K)) k^T, P = softmax(S) over keys j <= i, O = P v; it returns O and the
// rows' log-sum-exp L. Backward recomputes P = exp(S - L) and, with D_i = dO_i . O_i:
// dS = P * (dO v^T - D), dq = dS k / sqrt(K), dk = dS^T q / sqrt(K), dv = P^T dO.
// Float32; the head dim a multiple of 16. qkv is the fused projection [B, T, H, 3, K]
// (q, k, v on the 4th axis), O is [B, T, H, K], L is [B, H, T], the gradient [B, T, H, 3, K].
// The matmuls are register-tiled with GCC vector types as wide as the machine's registers (16
// floats with AVX-512, 8 with AVX2), compiled for the machine they run on (-march=native).
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <memory>
#include <mutex>
#include <condition_variable>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

// W floats to a vector register; a tile is MR rows x NV vectors of accumulators. AVX-512 (32
// registers): 6 x 4 zmm. Else AVX2 (16 registers): 6 x 2 ymm; 16-float vectors there spilled
// and ran 10-20x slower than XLA's einsums (a -march=haswell build on a Zen 4).
#ifdef __AVX512F__
constexpr int W = 16, NV = 4;
#else
constexpr int W = 8, NV = 2;
#endif
typedef float vf __attribute__((vector_size(4 * W), aligned(4)));
typedef int vi __attribute__((vector_size(4 * W)));
inline vf Load(const float* p) { return *reinterpret_cast<const vf*>(p); }
inline void Store(float* p, vf x) { *reinterpret_cast<vf*>(p) = x; }

constexpr int MR = 6;  // rows of a tile: 6 x NV accumulators + NV loads + 1 broadcast

// C[m, 0:W*V] = sum_k A[m*sam + k*sak] * B[k*ldb + 0:W*V], m < M <= MR.
template <int M, int V>
inline void Tile(float* C, int ldc, const float* A, long sam, long sak, const float* B, int ldb,
                 int K) {
  vf acc[M][V];
  for (int m = 0; m < M; ++m)
    for (int v = 0; v < V; ++v) acc[m][v] = vf{};
  for (int k = 0; k < K; ++k) {
    vf b[V];
    for (int v = 0; v < V; ++v) b[v] = Load(B + (long)k * ldb + W * v);
    for (int m = 0; m < M; ++m) {
      float a = A[m * sam + k * sak];
      for (int v = 0; v < V; ++v) acc[m][v] += a * b[v];
    }
  }
  for (int m = 0; m < M; ++m)
    for (int v = 0; v < V; ++v) Store(C + (long)m * ldc + W * v, acc[m][v]);
}

template <int M>
inline void RowTile(float* C, int ldc, const float* A, long sam, long sak, const float* B,
                    int ldb, int N, int K) {
  int n = 0;
  for (; n + W * NV <= N; n += W * NV) Tile<M, NV>(C + n, ldc, A, sam, sak, B + n, ldb, K);
  switch ((N - n) / W) {  // < NV
    case 3: Tile<M, 3>(C + n, ldc, A, sam, sak, B + n, ldb, K); break;
    case 2: Tile<M, 2>(C + n, ldc, A, sam, sak, B + n, ldb, K); break;
    case 1: Tile<M, 1>(C + n, ldc, A, sam, sak, B + n, ldb, K); break;
  }
}

// C[M, N] = A[M, K] B[K, N]; N a multiple of W. A(m, k) = A[m*sam + k*sak].
inline void Gemm(float* C, int ldc, const float* A, long sam, long sak, const float* B, int ldb,
                 int M, int N, int K) {
  int m = 0;
  for (; m + MR <= M; m += MR)
    RowTile<MR>(C + (long)m * ldc, ldc, A + m * sam, sam, sak, B, ldb, N, K);
  const float* a = A + m * sam;
  float* c = C + (long)m * ldc;
  switch (M - m) {
    case 5: RowTile<5>(c, ldc, a, sam, sak, B, ldb, N, K); break;
    case 4: RowTile<4>(c, ldc, a, sam, sak, B, ldb, N, K); break;
    case 3: RowTile<3>(c, ldc, a, sam, sak, B, ldb, N, K); break;
    case 2: RowTile<2>(c, ldc, a, sam, sak, B, ldb, N, K); break;
    case 1: RowTile<1>(c, ldc, a, sam, sak, B, ldb, N, K); break;
  }
}

inline int Up16(int n) { return (n + 15) / 16 * 16; }

#ifdef __AVX512F__
constexpr vi kIota = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};
#else
constexpr vi kIota = {0, 1, 2, 3, 4, 5, 6, 7};
#endif
static_assert(kIota[W - 1] == W - 1, "kIota must count 0 .. W - 1");


// exp(x), W at a time: 2^n p(r) with x = n ln2 + r (Cephes' expf polynomial, ~1 ulp).
inline vf Exp(vf x) {
  x = x < -87.0f ? vf{} - 87.0f : x;
  x = x > 88.0f ? vf{} + 88.0f : x;
  vf n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;  // round to nearest
  vf r = x - n * 0.693359375f + n * 2.12194440e-4f;
  vf p = 1.9875691500e-4f + vf{};
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  vi bits = (__builtin_convertvector(n, vi) + 127) << 23;  // 2^n as a float's bits
  vf two_n;
  std::memcpy(&two_n, &bits, sizeof two_n);
  return p * two_n;
}

inline float Sum(vf x) {
  float s = 0.f;
  for (int i = 0; i < W; ++i) s += x[i];
  return s;
}

// Runs fn(i) for i in [0, n) on the calling thread and the pool's.
template <typename F>
void ParallelFor(ffi::ThreadPool& pool, int n, F fn) {
  struct State {
    std::atomic<int> next{0};
    std::atomic<int> done{0};
    std::mutex mu;
    std::condition_variable cv;
  };
  auto state = std::make_shared<State>();
  auto work = [state, n, &fn]() {
    int i;
    while ((i = state->next.fetch_add(1)) < n) {
      fn(i);
      if (state->done.fetch_add(1) + 1 == n) {
        std::lock_guard<std::mutex> lock(state->mu);
        state->cv.notify_all();
      }
    }
  };
  int helpers = std::min<int>(pool.num_threads(), n) - 1;
  for (int t = 0; t < helpers; ++t) pool.Schedule([work]() mutable { work(); });
  work();
  std::unique_lock<std::mutex> lock(state->mu);
  state->cv.wait(lock, [&] { return state->done.load() == n; });
}

// A thread's scratch memory, reused across calls (every float is written before it is read).
float* Scratch(long floats) {
  thread_local std::unique_ptr<float[]> buffer;
  thread_local long size = 0;
  if (size < floats) {
    buffer.reset(new float[floats]);
    size = floats;
  }
  return buffer.get();
}

struct Dims {
  int B, T, H, K;
};

// Copies head (b, h)'s slot `which` (0 q, 1 k, 2 v) of qkv [B, T, H, 3, K], times `scale`,
// into rows [tp, K]; rows past T are zero.
void Gather(const float* qkv, Dims d, int b, int h, int which, float scale, float* rows, int tp) {
  for (int t = 0; t < tp; ++t) {
    float* dst = rows + (long)t * d.K;
    if (t >= d.T) {
      std::fill(dst, dst + d.K, 0.f);
      continue;
    }
    const float* src = qkv + (((long)b * d.T + t) * d.H + h) * 3 * d.K + which * d.K;
    for (int k = 0; k < d.K; ++k) dst[k] = scale * src[k];
  }
}

// cols [K, tp] = rows [tp, K]^T, 16 rows at a time (each write a contiguous 16 floats).
void Transpose(const float* rows, int tp, int K, float* cols) {
  for (int t0 = 0; t0 < tp; t0 += 16)
    for (int k = 0; k < K; ++k)
      for (int t = 0; t < 16; ++t) cols[(long)k * tp + t0 + t] = rows[(long)(t0 + t) * K + k];
}

ffi::Error Forward(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> qkv,
                   ffi::ResultBuffer<ffi::F32> out, ffi::ResultBuffer<ffi::F32> lse) {
  auto dims = qkv.dimensions();
  if (dims.size() != 5 || dims[3] != 3 || dims[4] % 16)
    return ffi::Error::InvalidArgument("qkv must be [B, T, H, 3, K] with K a multiple of 16");
  Dims d{(int)dims[0], (int)dims[1], (int)dims[2], (int)dims[4]};
  const float* x = qkv.typed_data();
  float* o = out->typed_data();
  float* l = lse->typed_data();
  const int tp = Up16(d.T), K = d.K;
  const float scale = 1.0f / std::sqrt((float)K);
  ParallelFor(pool, d.B * d.H, [&](int task) {
    int b = task / d.H, h = task % d.H;
    float* q = Scratch(4L * tp * K + MR * tp);
    float *kt = q + tp * K, *v = kt + tp * K, *p = v + tp * K, *ob = p + MR * tp;
    Gather(x, d, b, h, 0, scale, q, tp);
    Gather(x, d, b, h, 1, 1.f, ob, tp);  // k's rows, before ob holds outputs
    Transpose(ob, tp, K, kt);
    Gather(x, d, b, h, 2, 1.f, v, tp);
    for (int i0 = 0; i0 < d.T; i0 += MR) {
      int rows = std::min(MR, d.T - i0), n = Up16(i0 + rows);
      float inv[MR];
      Gemm(p, tp, q + (long)i0 * K, K, 1, kt, tp, rows, n, K);
      for (int r = 0; r < rows; ++r) {
        float* pr = p + (long)r * tp;
        int last = i0 + r;  // keys 0..last
        vf vmx = vf{} - INFINITY;
        for (int j = 0; j < n; j += W) {
          vf s = Load(pr + j);
          vmx = (kIota + j <= last) & (s > vmx) ? s : vmx;
        }
        float mx = vmx[0];
        for (int i = 1; i < W; ++i) mx = std::max(mx, vmx[i]);
        vf vsum = vf{};
        for (int j = 0; j < n; j += W) {
          vf e = kIota + j <= last ? Exp(Load(pr + j) - mx) : vf{};
          vsum += e;
          Store(pr + j, e);
        }
        float sum = Sum(vsum);
        inv[r] = 1.f / sum;  // applied to the output row, not to the n probabilities
        l[((long)b * d.H + h) * d.T + i0 + r] = mx + std::log(sum);
      }
      Gemm(ob, K, p, tp, 1, v, K, rows, K, n);
      for (int r = 0; r < rows; ++r) {
        float* dst = o + (((long)b * d.T + i0 + r) * d.H + h) * K;
        for (int k = 0; k < K; ++k) dst[k] = inv[r] * ob[(long)r * K + k];
      }
    }
  });
  return ffi::Error::Success();
}

ffi::Error Backward(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> qkv, ffi::Buffer<ffi::F32> out,
                    ffi::Buffer<ffi::F32> lse, ffi::Buffer<ffi::F32> dout,
                    ffi::ResultBuffer<ffi::F32> dqkv) {
  auto dims = qkv.dimensions();
  Dims d{(int)dims[0], (int)dims[1], (int)dims[2], (int)dims[4]};
  const float* x = qkv.typed_data();
  const float* o = out.typed_data();
  const float* l = lse.typed_data();
  const float* g = dout.typed_data();
  float* dx = dqkv->typed_data();
  const int tp = Up16(d.T), K = d.K;
  const float scale = 1.0f / std::sqrt((float)K);
  ParallelFor(pool, d.B * d.H, [&](int task) {
    int b = task / d.H, h = task % d.H;
    // The gradients are written straight into dqkv: rows of H * 3 * K floats, from (b, 0, h).
    const int ldx = d.H * 3 * K;
    float* dxq = dx + (long)b * d.T * ldx + (long)h * 3 * K;
    float* q = Scratch(6L * tp * K + tp + 2L * tp * tp + MR * tp);
    float *kt = q + tp * K, *kr = kt + tp * K, *vr = kr + tp * K, *vt = vr + tp * K;
    float *go = vt + tp * K, *delta = go + tp * K;
    float *p = delta + tp, *ds = p + (long)tp * tp, *dp = ds + (long)tp * tp;
    Gather(x, d, b, h, 0, scale, q, tp);
    Gather(x, d, b, h, 1, 1.f, kr, tp);
    Transpose(kr, tp, K, kt);
    for (long e = 0; e < (long)tp * K; ++e) kr[e] *= scale;  // dq = dS (k / sqrt(K))
    Gather(x, d, b, h, 2, 1.f, vr, tp);
    Transpose(vr, tp, K, vt);
    for (int t = 0; t < tp; ++t) {
      float* dst = go + (long)t * K;
      if (t >= d.T) {
        std::fill(dst, dst + K, 0.f);
        delta[t] = 0.f;
        continue;
      }
      const float* gt = g + (((long)b * d.T + t) * d.H + h) * K;
      const float* ot = o + (((long)b * d.T + t) * d.H + h) * K;
      vf s = vf{};
      for (int k = 0; k < K; k += W) {
        vf gk = Load(gt + k);
        Store(dst + k, gk);
        s += gk * Load(ot + k);
      }
      delta[t] = Sum(s);
    }
    for (int i0 = 0; i0 < d.T; i0 += MR) {
      int rows = std::min(MR, d.T - i0), n = Up16(i0 + rows);
      float* pb = p + (long)i0 * tp;
      float* sb = ds + (long)i0 * tp;
      Gemm(pb, tp, q + (long)i0 * K, K, 1, kt, tp, rows, n, K);
      Gemm(dp, tp, go + (long)i0 * K, K, 1, vt, tp, rows, n, K);
      for (int r = 0; r < rows; ++r) {
        float* pr = pb + (long)r * tp;
        float* sr = sb + (long)r * tp;
        const float* dpr = dp + (long)r * tp;
        int last = i0 + r;
        float lr = l[((long)b * d.H + h) * d.T + last], dr = delta[last];
        for (int j = 0; j < n; j += W) {
          vf e = kIota + j <= last ? Exp(Load(pr + j) - lr) : vf{};
          Store(pr + j, e);
          Store(sr + j, e * (Load(dpr + j) - dr));
        }
        // dV and dK below read this row's columns j0 .. j0 + MR - 1 for j0 <= last: zero those
        // past n (the rest of the row is never read).
        int end = std::max(n, std::min(tp, last + MR));
        std::fill(pr + n, pr + end, 0.f);
        std::fill(sr + n, sr + end, 0.f);
      }
      Gemm(dxq + (long)i0 * ldx, ldx, sb, tp, 1, kr, K, rows, K, n);
    }
    // dV = P^T dO and dK = dS^T Q, key rows j0.. from query rows j0.. (earlier ones are 0).
    for (int j0 = 0; j0 < d.T; j0 += MR) {
      int rows = std::min(MR, d.T - j0), kk = d.T - j0;
      Gemm(dxq + (long)j0 * ldx + 2 * K, ldx, p + (long)j0 * tp + j0, 1, tp,
           go + (long)j0 * K, K, rows, K, kk);
      Gemm(dxq + (long)j0 * ldx + K, ldx, ds + (long)j0 * tp + j0, 1, tp,
           q + (long)j0 * K, K, rows, K, kk);
    }
  });
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(LmjaxCausalAttentionFwd, Forward,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(LmjaxCausalAttentionBwd, Backward,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>());
