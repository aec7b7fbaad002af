// Prints hashes of the fused GRPO outputs (loss bits, lp, d logits) for 16-byte aligned rows;
// built against the old and the new headers, the outputs must be identical.
#include <cstdio>
#include <cstring>
#include <random>
#include <rlcore/backend/cuda/cuda.cuh>
#include <rlcore/backend/cuda/logits.cuh>
#include <thrust/device_vector.h>
#include <thrust/host_vector.h>
#include <vector>
using rlcore::device_space;
using rlcore::index_t;
template <class T>
T conv(float x) {
  return static_cast<T>(x);
}
template <>
__nv_bfloat16 conv(float x) {
  return __float2bfloat16_rn(x);
}
static unsigned long long fnv(const void* p, std::size_t n,
                              unsigned long long h = 1469598103934665603ull) {
  auto* b = static_cast<const unsigned char*>(p);
  for (std::size_t i = 0; i < n; ++i) {
    h ^= b[i];
    h *= 1099511628211ull;
  }
  return h;
}
template <class T>
void run(index_t vocab, index_t stride, int cluster, bool in_place, double tau) {
  const index_t n = 8, t_len = 16, slots = n * t_len;
  std::mt19937_64 rng(vocab + cluster);
  std::normal_distribution<float> dist(0.0f, 3.0f);
  std::vector<T> host(slots * stride);
  for (auto& x : host)
    x = conv<T>(dist(rng));
  host[5 * stride + 3] = conv<T>(3.3e38f); // one exact-path row (huge finite)
  std::vector<unsigned char> mask(slots, 1);
  for (index_t r = 0; r < slots; r += 7)
    mask[r] = 0;
  std::vector<int> ids(slots);
  for (index_t r = 0; r < slots; ++r)
    ids[r] = int((r * 7919) % vocab);
  std::vector<float> old(slots), ref(slots), adv(slots);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  for (index_t r = 0; r < slots; ++r) {
    old[r] = -10 + u(rng);
    ref[r] = -10 + u(rng);
    adv[r] = u(rng);
  }
  thrust::device_vector<T> d(host.begin(), host.end());
  thrust::device_vector<T> g(in_place ? 0 : slots * stride, conv<T>(1.0f));
  thrust::device_vector<unsigned char> dmask(mask.begin(), mask.end());
  thrust::device_vector<int> dids(ids.begin(), ids.end());
  thrust::device_vector<float> dold(old.begin(), old.end()), dref(ref.begin(), ref.end()),
      dadv(adv.begin(), adv.end()), lp(slots);
  auto m = [&](auto& v) {
    return rlcore::make_matrix_view<device_space>(thrust::raw_pointer_cast(v.data()), n, t_len);
  };
  const auto layout = rlcore::cuda::padded(rlcore::make_matrix_view<device_space>(
      static_cast<const unsigned char*>(thrust::raw_pointer_cast(dmask.data())), n, t_len));
  T* gp = in_place ? thrust::raw_pointer_cast(d.data()) : thrust::raw_pointer_cast(g.data());
  rlcore::logits_options lo;
  lo.temperature = tau;
  lo.nonfinite_logits =
      rlcore::nonfinite_logits_policy::propagate; // the huge-logit row: exact path
  rlcore::device_context ctx{};
  const auto result = rlcore::cuda::detail::fused_policy_loss_from_logits(
      layout,
      rlcore::matrix_view<const T, device_space>{thrust::raw_pointer_cast(d.data()), slots, vocab,
                                                 stride, 1},
      m(dids), m(dold), m(dadv), m(dref),
      rlcore::matrix_view<T, device_space>{gp, slots, vocab, stride, 1},
      rlcore::grpo_options{}.as_policy_options(), lo, ctx, thrust::raw_pointer_cast(lp.data()),
      cluster);
  thrust::host_vector<T> gh = in_place ? thrust::host_vector<T>(d) : thrust::host_vector<T>(g);
  thrust::host_vector<float> lph = lp;
  std::printf("bytes %zu V %lld stride %lld cluster %d in_place %d tau %.2f: loss %016llx lp "
              "%016llx grad %016llx\n",
              sizeof(T), (long long)vocab, (long long)stride, cluster, int(in_place), tau,
              fnv(&result.loss, sizeof(double)), fnv(lph.data(), lph.size() * sizeof(float)),
              fnv(gh.data(), gh.size() * sizeof(T)));
}
int main() {
  for (int cluster : {0, 1, 3, 4, 8}) {
    run<__nv_bfloat16>(152064, 152064, cluster, false, 1.0);
    run<__nv_bfloat16>(32000, 32000, cluster, false, 1.0);
    run<__nv_bfloat16>(32001, 32008, cluster, true, 0.8);
    run<float>(20005, 20008, cluster, false, 1.0);
    run<__half>(5003, 5008, cluster, true, 1.0);
  }
  return 0;
}
