// size: one runtime; scheduler, collectives, cp.async and checks share the fiber and CTA state.
// cuda-sim's runtime (see simt.h): fibers, the depth-first-by-warp scheduler, barriers, warp
// collectives (shuffles, ldmatrix, mma.sync), deferred cp.async, the emulated CTA's shared memory
// and the launch checks. Torch-free; compiled only into fastcnn._C_cudasim (-DFASTCNN_SIMT).
//
// Execution model. A launch runs its CTAs on a pool of host threads (FASTCNN_SIM_THREADS, default
// the core count), one CTA at a time per host thread. Each CUDA thread of the CTA is a fiber with
// its own guarded stack. The scheduler runs one warp as far as it can go (every lane until it
// blocks: a barrier, a collective, its exit) before the next warp: a breadth-first schedule keeps
// warps in step and hides a deleted __syncthreads, this one lets a warp run ahead into the next
// stage. A collective completes when all 32 lanes have arrived; the last one computes it for the
// warp. The order of warps (and of lanes) is fwd, rev or rand:<seed> (FASTCNN_SIM_ORDER).
//
// Findings (a collective whose lanes diverge or exited, a partial mask, a barrier deadlock, a read
// of a cp.async destination before its wait, cp.async copies pending at thread exit, shared
// memory written past the window, launch limits) stop the launch: run_launch throws a
// std::runtime_error naming the kernel, the CTA and the thread, which the torch op turns into a
// Python RuntimeError.
#include "cuda/sim/simt.h"
#include "cuda/sim/simt_control.h"

#include <cxxabi.h>
#include <dlfcn.h>
#include <elf.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#if defined(__SANITIZE_ADDRESS__)
#define FASTCNN_SIMT_ASAN 1
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#endif

#if !defined(__x86_64__)
#include <ucontext.h>
#endif

namespace fastcnn {
namespace simt {

thread_local LaneView* t_lane __attribute__((tls_model("initial-exec"))) = nullptr;

namespace {

// ------------------------------------------------------------------------------------------------
// Configuration (environment, overridable from Python through the sim module)
// ------------------------------------------------------------------------------------------------
struct Config {
  std::mutex mu;
  int threads = 0;         // 0: the core count
  int order = 0;           // 0 fwd, 1 rev, 2 rand
  uint64_t seed = 0;
  std::map<std::string, int> force;
  std::map<std::string, int> bounds;  // kernel (mangled) -> __launch_bounds__ max threads (nvcc build)
  std::set<std::string> launched;     // kernels (mangled) that ran
  bool loaded = false;
};

Config& cfg() {
  static Config* c = new Config();  // never destroyed: worker threads may outlive static teardown
  return *c;
}

std::string trim(const std::string& s) {
  const size_t a = s.find_first_not_of(" \t"), b = s.find_last_not_of(" \t");
  return a == std::string::npos ? std::string() : s.substr(a, b - a + 1);
}

void parse_order_locked(Config& c, const std::string& v) {
  if (v.empty() || v == "fwd") {
    c.order = 0;
  } else if (v == "rev") {
    c.order = 1;
  } else if (v.rfind("rand", 0) == 0) {
    c.order = 2;
    c.seed = v.size() > 5 && v[4] == ':' ? std::strtoull(v.c_str() + 5, nullptr, 10) : 0;
  } else {
    throw std::invalid_argument("cuda-sim: scheduling order must be fwd, rev or rand:<seed>, got '" + v + "'");
  }
}

void parse_force_locked(Config& c, const std::string& v) {
  c.force.clear();
  std::stringstream ss(v);
  std::string item;
  while (std::getline(ss, item, ',')) {
    item = trim(item);
    if (item.empty()) continue;
    const size_t eq = item.find('=');
    if (eq == std::string::npos)
      throw std::invalid_argument("cuda-sim: FASTCNN_SIM_FORCE items are kind=value, got '" + item + "'");
    c.force[trim(item.substr(0, eq))] = std::atoi(item.c_str() + eq + 1);
  }
}

Config& loaded_cfg() {
  Config& c = cfg();
  std::lock_guard<std::mutex> lock(c.mu);
  if (!c.loaded) {
    c.loaded = true;
    if (const char* t = std::getenv("FASTCNN_SIM_THREADS")) c.threads = std::atoi(t);
    if (const char* o = std::getenv("FASTCNN_SIM_ORDER")) parse_order_locked(c, o);
    if (const char* f = std::getenv("FASTCNN_SIM_FORCE")) parse_force_locked(c, f);
  }
  return c;
}

// ------------------------------------------------------------------------------------------------
// Kernel names: the sim module keeps its symbol table, so a kernel's address gives its mangled
// name (the same Itanium name nvcc gives the device entry), demangled for the reports.
// ------------------------------------------------------------------------------------------------
class SymbolTable {
 public:
  std::string mangled(const void* fn) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = cache_.find(fn);
    if (it != cache_.end()) return it->second;
    std::string name = lookup(fn);
    cache_[fn] = name;
    return name;
  }

 private:
  std::string lookup(const void* fn) {
    Dl_info info{};
    if (dladdr(fn, &info) == 0 || info.dli_fname == nullptr) return std::string();
    if (info.dli_sname != nullptr && info.dli_saddr == fn) return info.dli_sname;
    load(info.dli_fname, reinterpret_cast<uintptr_t>(info.dli_fbase));
    auto it = syms_.find(reinterpret_cast<uintptr_t>(fn));
    return it == syms_.end() ? std::string() : it->second;
  }

  void load(const char* path, uintptr_t base) {
    if (!loaded_.insert(path).second) return;
    const int fd = open(path, O_RDONLY);
    if (fd < 0) return;
    struct stat st {};
    if (fstat(fd, &st) != 0 || st.st_size < static_cast<off_t>(sizeof(Elf64_Ehdr))) {
      close(fd);
      return;
    }
    void* map = mmap(nullptr, size_t(st.st_size), PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (map == MAP_FAILED) return;
    const auto* bytes = static_cast<const unsigned char*>(map);
    const auto* eh = reinterpret_cast<const Elf64_Ehdr*>(bytes);
    if (std::memcmp(eh->e_ident, ELFMAG, SELFMAG) == 0 && eh->e_ident[EI_CLASS] == ELFCLASS64 &&
        eh->e_shoff + size_t(eh->e_shnum) * sizeof(Elf64_Shdr) <= size_t(st.st_size)) {
      const auto* sh = reinterpret_cast<const Elf64_Shdr*>(bytes + eh->e_shoff);
      for (int i = 0; i < eh->e_shnum; ++i) {
        if (sh[i].sh_type != SHT_SYMTAB || sh[i].sh_link >= eh->e_shnum) continue;
        const auto* sym = reinterpret_cast<const Elf64_Sym*>(bytes + sh[i].sh_offset);
        const char* str = reinterpret_cast<const char*>(bytes + sh[sh[i].sh_link].sh_offset);
        const size_t n = sh[i].sh_size / sizeof(Elf64_Sym);
        for (size_t k = 0; k < n; ++k) {
          if (ELF64_ST_TYPE(sym[k].st_info) != STT_FUNC || sym[k].st_value == 0) continue;
          syms_.emplace(base + sym[k].st_value, std::string(str + sym[k].st_name));
        }
      }
    }
    munmap(map, size_t(st.st_size));
  }

  std::mutex mu_;
  std::unordered_map<const void*, std::string> cache_;
  std::unordered_map<uintptr_t, std::string> syms_;
  std::set<std::string> loaded_;
};

SymbolTable& symbols() {
  static SymbolTable* t = new SymbolTable();
  return *t;
}

std::string demangle(const std::string& m) {
  int status = 0;
  char* d = abi::__cxa_demangle(m.c_str(), nullptr, nullptr, &status);
  if (status != 0 || d == nullptr) return m;
  std::string out(d);
  std::free(d);
  return out;
}

// ------------------------------------------------------------------------------------------------
// Fibers: a guarded stack each and a small context switch (x86-64: callee-saved registers, MXCSR
// and the x87 control word; elsewhere ucontext). Under AddressSanitizer every switch is announced
// (__sanitizer_start/finish_switch_fiber) so ASan knows which stack is live.
// ------------------------------------------------------------------------------------------------
#if defined(__x86_64__)
extern "C" void fastcnn_simt_switch(void** save_sp, void* next_sp);
extern "C" void fastcnn_simt_trampoline();
asm(R"(
.text
.globl fastcnn_simt_switch
.hidden fastcnn_simt_switch
.type fastcnn_simt_switch,@function
fastcnn_simt_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  subq $8, %rsp
  stmxcsr (%rsp)
  fnstcw 4(%rsp)
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  ldmxcsr (%rsp)
  fldcw 4(%rsp)
  addq $8, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
.size fastcnn_simt_switch,.-fastcnn_simt_switch
.globl fastcnn_simt_trampoline
.hidden fastcnn_simt_trampoline
.type fastcnn_simt_trampoline,@function
fastcnn_simt_trampoline:
  movq %r12, %rdi
  call fastcnn_simt_fiber_main
  ud2
.size fastcnn_simt_trampoline,.-fastcnn_simt_trampoline
)");
#endif

struct Ctx {
#if defined(__x86_64__)
  void* sp = nullptr;
#else
  ucontext_t uc;
#endif
  void* stack_lo = nullptr;  // lowest usable address (ASan)
  size_t stack_size = 0;
};

struct Stack {
  void* base = nullptr;  // mmap'd: guard page(s) at the bottom
  size_t total = 0, guard = 0;
  ~Stack() {
    if (base) munmap(base, total);
  }
  void* lo() const { return static_cast<char*>(base) + guard; }
  size_t size() const { return total - guard; }
};

size_t stack_bytes() {
  static const size_t bytes = [] {
    size_t kb = 0;
    if (const char* e = std::getenv("FASTCNN_SIM_STACK_KB")) kb = size_t(std::atol(e));
#ifdef FASTCNN_SIMT_ASAN
    if (kb == 0) kb = 512;  // instrumented frames are several times larger
#else
    if (kb == 0) kb = 128;
#endif
    return kb * 1024;
  }();
  return bytes;
}

std::unique_ptr<Stack> make_stack() {
  const size_t page = size_t(sysconf(_SC_PAGESIZE));
  auto s = std::make_unique<Stack>();
  s->guard = 4 * page;
  s->total = s->guard + (stack_bytes() + page - 1) / page * page;
  void* p = mmap(nullptr, s->total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED) throw std::runtime_error("cuda-sim: cannot map a fiber stack");
  s->base = p;
  mprotect(p, s->guard, PROT_NONE);  // a stack overflow faults instead of corrupting its neighbour
  return s;
}

// ------------------------------------------------------------------------------------------------
// Per-thread and per-CTA state
// ------------------------------------------------------------------------------------------------
enum class St : uint8_t { Ready, Barrier, Coll, Exited };
enum class Op : uint8_t { None, Shfl, Ldsm, LdsmT, Mma };

const char* op_name(Op o, int kind) {
  switch (o) {
    case Op::Shfl: return "__shfl_*_sync";
    case Op::Ldsm: return "ldmatrix.x4";
    case Op::LdsmT: return "ldmatrix.x4.trans";
    case Op::Mma: return kind == 2 ? "mma.sync.m16n8k8.tf32" : kind == 1 ? "mma.sync.m16n8k16.bf16" : "mma.sync.m16n8k16.f16";
    default: return "?";
  }
}

struct Copy {
  uint32_t dst;
  const void* src;
  int bytes;
  Site site;
};

struct Cta;

struct Fiber {
  LaneView view{};
  int linear = 0, warp = 0, lane = 0;
  St st = St::Ready;
  Ctx ctx;
  Stack* stack = nullptr;
  Cta* cta = nullptr;
  // the collective or barrier this thread waits at
  Op op = Op::None;
  Site site{};
  uint32_t mask = 0;
  int mode = 0, b = 0, c = 0, bytes = 0, kind = 0;
  uint64_t val = 0, result = 0;
  uint32_t addr = 0;
  uint32_t* r4 = nullptr;
  float* d = nullptr;
  const uint32_t* a = nullptr;
  const uint32_t* bm = nullptr;
  // cp.async: copies issued since the last commit, and the committed groups not yet retired
  std::vector<Copy> open;
  std::deque<std::vector<Copy>> groups;
#ifdef FASTCNN_SIMT_ASAN
  void* fake_stack = nullptr;
#endif
};

// Shared window (addresses as __cvta_generic_to_shared gives them: offsets from `window`):
//   [0, kStatic)                      static __shared__ arrays (FASTCNN_SHARED), bump-allocated
//   [kDynOff, kDynOff + dyn)          the launch's dynamic shared memory, exactly its size
//   [kDynOff + dyn, + kGuard)         guard band: 0xFF, checked at CTA exit; poisoned under ASan
constexpr size_t kStatic = 48 * 1024;
constexpr size_t kRedzone = 64;
constexpr size_t kGuard = 4096;
constexpr size_t kDynOff = kStatic + kGuard;
constexpr size_t kMaxDyn = 227 * 1024;  // sm_90 opt-in maximum per block
constexpr size_t kWindow = kDynOff + kMaxDyn + kGuard;

struct StaticAlloc {
  Site site;
  size_t off, bytes;
};

struct LaunchState;

struct Cta {
  const LaunchState* L = nullptr;
  uint3 bid{};
  int nthreads = 0, nwarps = 0;
  Fiber* fibers = nullptr;
  unsigned char* window = nullptr;
  size_t dyn = 0;
  std::vector<StaticAlloc> statics;
  size_t static_top = 0;
  std::vector<int32_t> pending;  // per 16-byte chunk: issuing thread + 1 of a pending cp.async, or 0
  std::string error;             // first finding
  Ctx sched;                     // the host thread's context
  uint64_t rng = 0;
};

struct LaunchState {
  const LaunchDesc* d = nullptr;
  std::string mangled, name;
  int nthreads = 0;
};

// Never return, but are not declared [[noreturn]]: under ASan a call to a noreturn function runs
// __asan_handle_no_return, which assumes the thread's own stack and misreads a fiber's.
void fiber_exit_to_scheduler(Fiber* f);
volatile bool g_unreachable = false;

// ------------------------------------------------------------------------------------------------
// Context switching
// ------------------------------------------------------------------------------------------------
thread_local Fiber* t_fiber = nullptr;

void switch_ctx(Ctx& from, Ctx& to, void** fake_save) {
#ifdef FASTCNN_SIMT_ASAN
  __sanitizer_start_switch_fiber(fake_save, to.stack_lo, to.stack_size);
#else
  (void)fake_save;
#endif
#if defined(__x86_64__)
  fastcnn_simt_switch(&from.sp, to.sp);
#else
  swapcontext(&from.uc, &to.uc);
#endif
}

// In a fiber: back to the scheduler (which resumes it later, or never).
void yield_fiber(Fiber* f) {
#ifdef FASTCNN_SIMT_ASAN
  switch_ctx(f->ctx, f->cta->sched, &f->fake_stack);
  const void* lo = nullptr;
  size_t sz = 0;
  __sanitizer_finish_switch_fiber(f->fake_stack, &lo, &sz);  // we came from the scheduler's stack
  f->cta->sched.stack_lo = const_cast<void*>(lo);
  f->cta->sched.stack_size = sz;
#else
  switch_ctx(f->ctx, f->cta->sched, nullptr);
#endif
}

// In the scheduler: run fiber f until it blocks or exits.
void resume_fiber(Cta& cta, Fiber* f) {
  t_fiber = f;
  t_lane = &f->view;
#ifdef FASTCNN_SIMT_ASAN
  void* fake = nullptr;
  switch_ctx(cta.sched, f->ctx, &fake);
  __sanitizer_finish_switch_fiber(fake, nullptr, nullptr);
#else
  switch_ctx(cta.sched, f->ctx, nullptr);
#endif
  t_fiber = nullptr;
  t_lane = nullptr;
}

}  // namespace
}  // namespace simt
}  // namespace fastcnn

extern "C" void fastcnn_simt_fiber_main(fastcnn::simt::Fiber* f);

namespace fastcnn {
namespace simt {
namespace {

#if !defined(__x86_64__)
void uc_entry(unsigned lo, unsigned hi) {
  fastcnn_simt_fiber_main(reinterpret_cast<Fiber*>((uintptr_t(hi) << 32) | uintptr_t(lo)));
}
#endif

void init_fiber_ctx(Fiber* f) {
  f->ctx.stack_lo = f->stack->lo();
  f->ctx.stack_size = f->stack->size();
#if defined(__x86_64__)
  uintptr_t top = (reinterpret_cast<uintptr_t>(f->stack->lo()) + f->stack->size()) & ~uintptr_t(15);
  // After the switch's `ret` the trampoline runs with rsp = top (16-aligned), so its `call` enters
  // fastcnn_simt_fiber_main with rsp = 8 mod 16, as the ABI wants.
  auto* sp = reinterpret_cast<uint64_t*>(top);
  *--sp = reinterpret_cast<uint64_t>(&fastcnn_simt_trampoline);  // ret target
  *--sp = 0;                                                   // rbp
  *--sp = 0;                                                   // rbx
  *--sp = reinterpret_cast<uint64_t>(f);                       // r12 -> rdi of fiber_main
  *--sp = 0;                                                   // r13
  *--sp = 0;                                                   // r14
  *--sp = 0;                                                   // r15
  uint32_t csr[2] = {0, 0};
  asm volatile("stmxcsr %0" : "=m"(csr[0]));
  asm volatile("fnstcw %0" : "=m"(csr[1]));
  uint64_t packed = uint64_t(csr[0]) | (uint64_t(csr[1] & 0xffff) << 32);
  *--sp = packed;
  f->ctx.sp = sp;
#else
  getcontext(&f->ctx.uc);
  f->ctx.uc.uc_stack.ss_sp = f->stack->lo();
  f->ctx.uc.uc_stack.ss_size = f->stack->size();
  f->ctx.uc.uc_link = nullptr;
  const uintptr_t p = reinterpret_cast<uintptr_t>(f);
  makecontext(&f->ctx.uc, reinterpret_cast<void (*)()>(&uc_entry), 2, unsigned(p & 0xffffffffu), unsigned(p >> 32));
#endif
}

// ------------------------------------------------------------------------------------------------
// Reports
// ------------------------------------------------------------------------------------------------
std::string where(const Site& s) {
  std::string f = s.file ? s.file : "?";
  const size_t k = f.find("csrc/");
  if (k != std::string::npos) f = f.substr(k);
  return f + ":" + std::to_string(s.line);
}

std::string dim_str(uint3 v) {
  return "(" + std::to_string(v.x) + "," + std::to_string(v.y) + "," + std::to_string(v.z) + ")";
}

std::string who(const Cta& cta, const Fiber* f) {
  std::string s = "cuda-sim: kernel " + cta.L->name + ", CTA " + dim_str(cta.bid);
  if (f != nullptr)
    s += ", thread " + dim_str(f->view.tid) + " (warp " + std::to_string(f->warp) + ", lane " + std::to_string(f->lane) + ")";
  return s;
}

// A finding inside a fiber: record it (first one wins) and leave the CTA for good.
void fail(Fiber* f, const std::string& what) {
  Cta& cta = *f->cta;
  if (cta.error.empty()) cta.error = who(cta, f) + ": " + what;
  fiber_exit_to_scheduler(f);
}

void fail_cta(Cta& cta, const Fiber* f, const std::string& what) {
  if (cta.error.empty()) cta.error = who(cta, f) + ": " + what;
}

Fiber* current(const char* what) {
  Fiber* f = t_fiber;
  if (f == nullptr) throw std::logic_error(std::string("cuda-sim: ") + what + " called outside a kernel");
  return f;
}

// ------------------------------------------------------------------------------------------------
// Shared memory
// ------------------------------------------------------------------------------------------------
bool in_dynamic(const Cta& cta, uint64_t a, uint64_t n) { return a >= kDynOff && a + n <= kDynOff + cta.dyn; }

bool in_static(const Cta& cta, uint64_t a, uint64_t n) {
  for (const StaticAlloc& s : cta.statics)
    if (a >= s.off && a + n <= s.off + s.bytes) return true;
  return false;
}

std::string window_str(const Cta& cta) {
  std::string s = "dynamic window [" + std::to_string(kDynOff) + ", " + std::to_string(kDynOff + cta.dyn) + ")";
  if (!cta.statics.empty()) s += " and " + std::to_string(cta.statics.size()) + " static array(s)";
  return s;
}

void check_shared(Fiber* f, uint32_t a, uint32_t n, const char* what, const Site& site) {
  const Cta& cta = *f->cta;
  if (!in_dynamic(cta, a, n) && !in_static(cta, a, n))
    fail(f, std::string(what) + " at " + where(site) + " touches shared bytes [" + std::to_string(a) + ", " +
                std::to_string(uint64_t(a) + n) + ") outside the CTA's shared memory (" + window_str(cta) + ")");
}

// A read of shared bytes by a collective: no pending cp.async may target them.
void check_not_pending(Fiber* f, uint32_t a, uint32_t n, const char* what, const Site& site) {
  const Cta& cta = *f->cta;
  for (uint32_t c = a / 16; c <= (a + n - 1) / 16; ++c) {
    const int32_t owner = cta.pending[c];
    if (owner != 0)
      fail(f, std::string(what) + " at " + where(site) + " reads shared bytes [" + std::to_string(a) + ", " +
                  std::to_string(a + n) + ") while a cp.async of thread " + std::to_string(owner - 1) +
                  " into them is still pending (read before the cp.async.wait_group that retires it)");
  }
}

// ------------------------------------------------------------------------------------------------
// Warp collectives
// ------------------------------------------------------------------------------------------------
void arrive(Fiber* f, Op op, const Site& site) {
  f->op = op;
  f->site = site;
  f->st = St::Coll;
  yield_fiber(f);
}

float bf16_bits_to_float(uint16_t h) {
  uint32_t u = uint32_t(h) << 16;
  float v;
  std::memcpy(&v, &u, 4);
  return v;
}
float f16_bits_to_float(uint16_t h) {
  __half_raw r;
  r.x = h;
  return __half2float(__half(r));
}
float tf32_operand(uint32_t bits) {  // the tensor core reads 19 bits: sign, exponent, 10 mantissa bits
  bits &= 0xffffe000u;
  float v;
  std::memcpy(&v, &bits, 4);
  return v;
}

// Computes the collective of warp w (every lane arrived at it) and releases the lanes.
void run_collective(Cta& cta, int w) {
  Fiber* lanes = cta.fibers + 32 * w;
  const Fiber& l0 = lanes[0];
  const Op op = l0.op;
  if (op == Op::Shfl) {
    for (int L = 0; L < 32; ++L) {
      const Fiber& me = lanes[L];
      const int b = me.b, c = me.c;
      const int maxl = (L & ((c >> 8) & 0x1f)) | ((c & 0x1f) & ~((c >> 8) & 0x1f));
      const int minl = L & ((c >> 8) & 0x1f);
      int j = L;
      bool ok = false;
      switch (me.mode) {
        case 0: j = L - b; ok = j >= maxl; break;  // up: maxLane is the segment start here
        case 1: j = L + b; ok = j <= maxl; break;
        case 2: j = L ^ b; ok = j <= maxl; break;
        default: j = minl | (b & ~((c >> 8) & 0x1f)); ok = j <= maxl; break;
      }
      if (!ok || j < 0 || j > 31) j = L;
      lanes[L].result = lanes[j].val;
    }
  } else if (op == Op::Ldsm || op == Op::LdsmT) {
    const bool trans = op == Op::LdsmT;
    for (int L = 0; L < 32; ++L) {
      const int g = L / 4, t = L % 4;
      for (int i = 0; i < 4; ++i) {
        uint32_t v;
        if (!trans) {
          const uint32_t row = lanes[8 * i + g].addr;  // lane 8i+g addresses row g of matrix i
          std::memcpy(&v, cta.window + row + 4 * t, 4);
        } else {
          uint16_t lo, hi;
          std::memcpy(&lo, cta.window + lanes[8 * i + 2 * t].addr + 2 * g, 2);
          std::memcpy(&hi, cta.window + lanes[8 * i + 2 * t + 1].addr + 2 * g, 2);
          v = uint32_t(lo) | (uint32_t(hi) << 16);
        }
        lanes[L].r4[i] = v;
      }
    }
  } else if (op == Op::Mma) {
    const int kind = l0.kind;
    const int K = kind == 2 ? 8 : 16;
    double A[16][16], B[16][8], C[16][8];
    for (int L = 0; L < 32; ++L) {
      const Fiber& me = lanes[L];
      const int g = L / 4, t = L % 4;
      if (kind == 2) {
        A[g][t] = tf32_operand(me.a[0]);
        A[g + 8][t] = tf32_operand(me.a[1]);
        A[g][t + 4] = tf32_operand(me.a[2]);
        A[g + 8][t + 4] = tf32_operand(me.a[3]);
        B[t][g] = tf32_operand(me.bm[0]);
        B[t + 4][g] = tf32_operand(me.bm[1]);
      } else {
        auto el = [&](uint32_t reg, int hi) {
          const uint16_t h = uint16_t(hi ? reg >> 16 : reg & 0xffffu);
          return double(kind == 1 ? bf16_bits_to_float(h) : f16_bits_to_float(h));
        };
        for (int h = 0; h < 2; ++h) {
          A[g][2 * t + h] = el(me.a[0], h);
          A[g + 8][2 * t + h] = el(me.a[1], h);
          A[g][2 * t + 8 + h] = el(me.a[2], h);
          A[g + 8][2 * t + 8 + h] = el(me.a[3], h);
          B[2 * t + h][g] = el(me.bm[0], h);
          B[2 * t + 8 + h][g] = el(me.bm[1], h);
        }
      }
      C[g][2 * t] = me.d[0];
      C[g][2 * t + 1] = me.d[1];
      C[g + 8][2 * t] = me.d[2];
      C[g + 8][2 * t + 1] = me.d[3];
    }
    // Products are exact in double (11-bit significands at most); the sum is rounded once.
    float D[16][8];
    for (int i = 0; i < 16; ++i)
      for (int j = 0; j < 8; ++j) {
        double s = C[i][j];
        for (int k = 0; k < K; ++k) s += A[i][k] * B[k][j];
        D[i][j] = float(s);
      }
    for (int L = 0; L < 32; ++L) {
      const int g = L / 4, t = L % 4;
      float* d = lanes[L].d;
      d[0] = D[g][2 * t];
      d[1] = D[g][2 * t + 1];
      d[2] = D[g + 8][2 * t];
      d[3] = D[g + 8][2 * t + 1];
    }
  }
  for (int L = 0; L < 32; ++L) {
    lanes[L].op = Op::None;
    lanes[L].st = St::Ready;
  }
}

// ------------------------------------------------------------------------------------------------
// cp.async
// ------------------------------------------------------------------------------------------------
void retire_oldest(Fiber* f) {
  Cta& cta = *f->cta;
  for (const Copy& c : f->groups.front()) {
    unsigned char* dst = cta.window + c.dst;
    if (c.bytes > 0) std::memcpy(dst, c.src, size_t(c.bytes));
    if (c.bytes < 16) std::memset(dst + c.bytes, 0, size_t(16 - c.bytes));
    if (cta.pending[c.dst / 16] == f->linear + 1) cta.pending[c.dst / 16] = 0;
  }
  f->groups.pop_front();
}

size_t pending_copies(const Fiber* f, Site* last) {
  size_t n = f->open.size();
  if (!f->open.empty()) *last = f->open.back().site;
  for (const auto& g : f->groups) {
    n += g.size();
    if (!g.empty()) *last = g.back().site;
  }
  return n;
}

// ------------------------------------------------------------------------------------------------
// The scheduler
// ------------------------------------------------------------------------------------------------
uint64_t splitmix(uint64_t& s) {
  uint64_t z = (s += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

void make_order(std::vector<int>& v, int n, int order, uint64_t& rng) {
  v.resize(size_t(n));
  for (int i = 0; i < n; ++i) v[size_t(i)] = order == 1 ? n - 1 - i : i;
  if (order == 2)
    for (int i = n - 1; i > 0; --i) std::swap(v[size_t(i)], v[size_t(splitmix(rng) % uint64_t(i + 1))]);
}

std::string lanes_str(uint32_t m) {
  std::string s;
  for (int i = 0; i < 32;) {
    if (!(m >> i & 1)) {
      ++i;
      continue;
    }
    int j = i;
    while (j + 1 < 32 && (m >> (j + 1) & 1)) ++j;
    if (!s.empty()) s += ",";
    s += j == i ? std::to_string(i) : std::to_string(i) + "-" + std::to_string(j);
    i = j + 1;
  }
  return s.empty() ? "none" : s;
}

// Runs warp w as far as it goes. Returns false on a finding.
bool run_warp(Cta& cta, int w, int order) {
  Fiber* lanes = cta.fibers + 32 * w;
  const int n = std::min(32, cta.nthreads - 32 * w);
  std::vector<int> lane_order;
  for (;;) {
    make_order(lane_order, n, order, cta.rng);
    for (int L : lane_order) {
      Fiber* f = lanes + L;
      if (f->st != St::Ready) continue;
      resume_fiber(cta, f);
      if (!cta.error.empty()) return false;
    }
    // Every lane is blocked. A collective completes when all 32 lanes wait at the same one.
    uint32_t at_coll = 0, at_bar = 0, exited = 0;
    for (int L = 0; L < n; ++L) {
      if (lanes[L].st == St::Coll) at_coll |= 1u << L;
      if (lanes[L].st == St::Barrier) at_bar |= 1u << L;
      if (lanes[L].st == St::Exited) exited |= 1u << L;
    }
    if (at_coll == 0) return true;  // at a barrier or done
    const Fiber* first = nullptr;
    for (int L = 0; L < n; ++L)
      if (at_coll >> L & 1) {
        first = lanes + L;
        break;
      }
    std::string why;
    if (n < 32) {
      why = "the warp has only " + std::to_string(n) + " threads (blockDim not a multiple of 32)";
    } else if (at_coll != 0xffffffffu) {
      why = "lanes " + lanes_str(at_coll) + " wait at " + op_name(first->op, first->kind) + " (" + where(first->site) + ")";
      if (at_bar) {
        for (int L = 0; L < 32; ++L)
          if (at_bar >> L & 1) {
            why += ", lanes " + lanes_str(at_bar) + " at __syncthreads (" + where(lanes[L].site) + ")";
            break;
          }
      }
      if (exited) why += ", lanes " + lanes_str(exited) + " have exited";
    } else {
      for (int L = 1; L < 32 && why.empty(); ++L) {
        const Fiber& o = lanes[L];
        if (o.op != first->op || o.site.line != first->site.line || o.site.file != first->site.file ||
            (o.op == Op::Mma && o.kind != first->kind))
          why = "lane 0 waits at " + std::string(op_name(first->op, first->kind)) + " (" + where(first->site) +
                ") but lane " + std::to_string(L) + " at " + op_name(o.op, o.kind) + " (" + where(o.site) + ")";
        else if (o.mask != first->mask)
          why = "lanes disagree on the member mask";
        else if (o.op == Op::Shfl && (o.bytes != first->bytes || o.c != first->c))
          why = "lanes disagree on the shuffle's width or operand size";
      }
      if (why.empty() && first->mask != 0xffffffffu)
        why = "member mask " + std::to_string(first->mask) + " is partial (cuda-sim supports full-warp collectives only)";
    }
    if (!why.empty()) {
      fail_cta(cta, first, std::string("divergent warp collective: ") + why);
      return false;
    }
    run_collective(cta, w);
  }
}

}  // namespace
}  // namespace simt
}  // namespace fastcnn

// The first code a fiber runs: the kernel, then the exit checks.
extern "C" __attribute__((visibility("hidden"))) void fastcnn_simt_fiber_main(fastcnn::simt::Fiber* f) {
  using namespace fastcnn::simt;
  Cta& cta = *f->cta;
#ifdef FASTCNN_SIMT_ASAN
  const void* lo = nullptr;
  size_t sz = 0;
  __sanitizer_finish_switch_fiber(nullptr, &lo, &sz);  // we came from the scheduler's stack
  cta.sched.stack_lo = const_cast<void*>(lo);
  cta.sched.stack_size = sz;
#endif
  const LaunchDesc& d = *cta.L->d;
  d.invoke(d.fn, d.args);
  Site last{};
  const size_t n = pending_copies(f, &last);
  if (n > 0)
    fail(f, "exits with " + std::to_string(n) + " cp.async cop" + (n == 1 ? "y" : "ies") +
                " never waited for (last issued at " + where(last) + ")");
  fiber_exit_to_scheduler(f);
}

namespace fastcnn {
namespace simt {
namespace {

void fiber_exit_to_scheduler(Fiber* f) {
  f->st = St::Exited;
#ifdef FASTCNN_SIMT_ASAN
  __sanitizer_start_switch_fiber(nullptr, f->cta->sched.stack_lo, f->cta->sched.stack_size);
#endif
#if defined(__x86_64__)
  void* dummy;
  fastcnn_simt_switch(&dummy, f->cta->sched.sp);
#else
  setcontext(&f->cta->sched.uc);
#endif
  g_unreachable = true;  // a finished fiber is never resumed; a volatile store (not abort) keeps the
                         // compiler from deducing noreturn (see the declaration)
}

// A host thread's reusable resources: fibers and their stacks, the shared window.
struct Worker {
  std::vector<Fiber> fibers;
  std::vector<std::unique_ptr<Stack>> stacks;
  unsigned char* window = nullptr;
  bool dirty = false;  // an aborted CTA left fiber frames behind (ASan: stale stack poison)
  Worker() {
    window = static_cast<unsigned char*>(std::aligned_alloc(128, kWindow));
    if (window == nullptr) throw std::bad_alloc();
  }
  ~Worker() { std::free(window); }
  void reserve(int n) {
    if (int(fibers.size()) < n) fibers.resize(size_t(n));
    while (int(stacks.size()) < n) stacks.push_back(make_stack());
  }
};

std::mutex g_workers_mu;
std::vector<std::unique_ptr<Worker>>* g_workers = new std::vector<std::unique_ptr<Worker>>();

std::unique_ptr<Worker> take_worker() {
  {
    std::lock_guard<std::mutex> lock(g_workers_mu);
    if (!g_workers->empty()) {
      auto w = std::move(g_workers->back());
      g_workers->pop_back();
      return w;
    }
  }
  return std::make_unique<Worker>();
}
void give_worker(std::unique_ptr<Worker> w) {
  std::lock_guard<std::mutex> lock(g_workers_mu);
  g_workers->push_back(std::move(w));
}

void poison_region(void* p, size_t n) {
#ifdef FASTCNN_SIMT_ASAN
  ASAN_POISON_MEMORY_REGION(p, n);
#else
  (void)p, (void)n;
#endif
}
void unpoison_region(void* p, size_t n) {
#ifdef FASTCNN_SIMT_ASAN
  ASAN_UNPOISON_MEMORY_REGION(p, n);
#else
  (void)p, (void)n;
#endif
}

// Runs one CTA to completion on this host thread. Returns the finding, or "".
std::string run_cta(Worker& wk, const LaunchState& L, uint3 bid, uint64_t cta_linear, int order, uint64_t seed) {
  const LaunchDesc& d = *L.d;
  Cta cta;
  cta.L = &L;
  cta.bid = bid;
  cta.nthreads = L.nthreads;
  cta.nwarps = (L.nthreads + 31) / 32;
  cta.dyn = d.smem;
  cta.window = wk.window;
  cta.pending.assign((kDynOff + cta.dyn + kGuard) / 16 + 1, 0);
  uint64_t s = seed ^ (cta_linear * 0x9e3779b97f4a7c15ull);
  cta.rng = splitmix(s);
  // Shared memory of exactly the launch's size, 0xFF (NaN in every float type) as on no GPU.
  const size_t used = kDynOff + cta.dyn + kGuard;
  unpoison_region(cta.window, kWindow);
  std::memset(cta.window, 0xff, used);
  poison_region(cta.window, kDynOff);  // static arrays are unpoisoned as they are declared
  poison_region(cta.window + kDynOff + cta.dyn, kWindow - kDynOff - cta.dyn);

  wk.reserve(cta.nthreads);
  if (wk.dirty) {
    for (int i = 0; i < cta.nthreads; ++i) unpoison_region(wk.stacks[size_t(i)]->lo(), wk.stacks[size_t(i)]->size());
    wk.dirty = false;
  }
  cta.fibers = wk.fibers.data();
  const dim3 bd = d.block;
  for (int i = 0; i < cta.nthreads; ++i) {
    Fiber& f = cta.fibers[i];
    f.view.tid = uint3{unsigned(i) % bd.x, (unsigned(i) / bd.x) % bd.y, unsigned(i) / (bd.x * bd.y)};
    f.view.bid = bid;
    f.view.bdim = d.block;
    f.view.gdim = d.grid;
    f.linear = i;
    f.warp = i / 32;
    f.lane = i % 32;
    f.st = St::Ready;
    f.op = Op::None;
    f.cta = &cta;
    f.stack = wk.stacks[size_t(i)].get();
    f.open.clear();
    f.groups.clear();
    init_fiber_ctx(&f);
  }

  std::vector<int> warp_order;
  for (;;) {
    make_order(warp_order, cta.nwarps, order, cta.rng);
    for (int w : warp_order)
      if (!run_warp(cta, w, order)) break;
    if (!cta.error.empty()) break;
    int live = 0, at_bar = 0;
    const Fiber* b0 = nullptr;
    for (int i = 0; i < cta.nthreads; ++i) {
      const Fiber& f = cta.fibers[i];
      if (f.st == St::Exited) continue;
      ++live;
      if (f.st == St::Barrier) {
        ++at_bar;
        if (b0 == nullptr) b0 = &f;
      }
    }
    if (live == 0) break;
    if (at_bar != live) {
      fail_cta(cta, nullptr, "deadlock: " + std::to_string(live - at_bar) + " thread(s) blocked outside a barrier");
      break;
    }
    for (int i = 0; i < cta.nthreads; ++i) {
      const Fiber& f = cta.fibers[i];
      if (f.st == St::Barrier && (f.site.line != b0->site.line || f.site.file != b0->site.file)) {
        fail_cta(cta, &f, "waits at __syncthreads (" + where(f.site) + ") while thread " +
                              dim_str(b0->view.tid) + " waits at another one (" + where(b0->site) + ")");
        break;
      }
    }
    if (!cta.error.empty()) break;
    for (int i = 0; i < cta.nthreads; ++i)
      if (cta.fibers[i].st == St::Barrier) cta.fibers[i].st = St::Ready;
  }
  if (!cta.error.empty()) {
    wk.dirty = true;
    return cta.error;
  }
  // Writes past the dynamic window land in the guard band (without ASan: checked here).
  unpoison_region(cta.window, kWindow);
  const unsigned char* g = cta.window + kDynOff + cta.dyn;
  for (size_t i = 0; i < kGuard; ++i)
    if (g[i] != 0xff) {
      return who(cta, nullptr) + ": shared memory written out of bounds at dynamic offset " + std::to_string(cta.dyn + i) +
             " (the launch has " + std::to_string(cta.dyn) + " bytes of dynamic shared memory)";
    }
  for (size_t k = 0; k < cta.statics.size(); ++k) {
    const StaticAlloc& a = cta.statics[k];
    for (size_t i = a.off + a.bytes; i < a.off + a.bytes + kRedzone; ++i)
      if (cta.window[i] != 0xff)
        return who(cta, nullptr) + ": static shared array declared at " + where(a.site) + " (" + std::to_string(a.bytes) +
               " bytes) written out of bounds at byte " + std::to_string(i - a.off);
  }
  return std::string();
}

// cudaFuncSetAttribute(MaxDynamicSharedMemorySize), per kernel as the driver keeps it.
std::mutex g_attr_mu;
std::unordered_map<const void*, int>* g_max_dyn = new std::unordered_map<const void*, int>();

}  // namespace

// ------------------------------------------------------------------------------------------------
// The API of simt.h
// ------------------------------------------------------------------------------------------------
void syncthreads(Site site) {
  Fiber* f = current("__syncthreads");
  f->op = Op::None;
  f->site = site;
  f->st = St::Barrier;
  yield_fiber(f);
}

uint64_t shfl(int mode, uint32_t mask, uint64_t value, int bytes, int b, int c, Site site) {
  Fiber* f = current("__shfl_sync");
  f->mode = mode;
  f->mask = mask;
  f->val = value;
  f->bytes = bytes;
  f->b = b;
  f->c = c;
  arrive(f, Op::Shfl, site);
  return f->result;
}

void ldmatrix_x4(uint32_t addr, bool trans, uint32_t (&r)[4], Site site) {
  Fiber* f = current("ldmatrix");
  const char* what = trans ? "ldmatrix.x4.trans" : "ldmatrix.x4";
  if (addr % 16 != 0)
    fail(f, std::string(what) + " at " + where(site) + ": row address " + std::to_string(addr) + " is not 16-byte aligned");
  check_shared(f, addr, 16, what, site);
  check_not_pending(f, addr, 16, what, site);
  f->addr = addr;
  f->r4 = r;
  f->mask = 0xffffffffu;
  arrive(f, trans ? Op::LdsmT : Op::Ldsm, site);
}

void mma(int kind, float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2], Site site) {
  Fiber* f = current("mma.sync");
  f->kind = kind;
  f->d = d;
  f->a = a;
  f->bm = b;
  f->mask = 0xffffffffu;
  arrive(f, Op::Mma, site);
}

void cp_async16(uint32_t dst, const void* src, int src_bytes, Site site) {
  Fiber* f = current("cp.async");
  if (dst % 16 != 0)
    fail(f, "cp.async at " + where(site) + ": shared destination " + std::to_string(dst) + " is not 16-byte aligned");
  if (src_bytes < 0 || src_bytes > 16)
    fail(f, "cp.async at " + where(site) + ": source size " + std::to_string(src_bytes) + " outside [0, 16]");
  if (src_bytes > 0 && (reinterpret_cast<uintptr_t>(src) & 15) != 0)
    fail(f, "cp.async at " + where(site) + ": global source " + std::to_string(reinterpret_cast<uintptr_t>(src)) +
                " is not 16-byte aligned");
  check_shared(f, dst, 16, "cp.async", site);
  Cta& cta = *f->cta;
  // Until the wait that retires it, the destination reads as poison.
  std::memset(cta.window + dst, 0xff, 16);
  cta.pending[dst / 16] = f->linear + 1;
  f->open.push_back(Copy{dst, src, src_bytes, site});
}

void cp_async_commit(Site) {
  Fiber* f = current("cp.async.commit_group");
  f->groups.push_back(std::move(f->open));
  f->open.clear();
}

void cp_async_wait(int n, Site) {
  Fiber* f = current("cp.async.wait_group");
  while (int(f->groups.size()) > n) retire_oldest(f);
}

uint32_t shared_addr(const void* p, Site site) {
  Fiber* f = current("__cvta_generic_to_shared");
  const auto* b = static_cast<const unsigned char*>(p);
  if (b < f->cta->window || b >= f->cta->window + kWindow)
    fail(f, "__cvta_generic_to_shared at " + where(site) + " of a pointer outside shared memory");
  return uint32_t(b - f->cta->window);
}

unsigned char* dynamic_smem() {
  Fiber* f = current("extern __shared__");
  return f->cta->window + kDynOff;
}

void* static_smem(Site site, size_t bytes, size_t align) {
  Fiber* f = current("__shared__");
  Cta& cta = *f->cta;
  for (const StaticAlloc& a : cta.statics)
    if (a.site.line == site.line && a.site.file == site.file) return cta.window + a.off;
  size_t off = (cta.static_top + kRedzone + align - 1) / align * align;
  if (off + bytes + kRedzone > kStatic)
    fail(f, "static __shared__ arrays exceed cuda-sim's " + std::to_string(kStatic) + "-byte static area");
  cta.statics.push_back(StaticAlloc{site, off, bytes});
  cta.static_top = off + bytes;
  unpoison_region(cta.window + off, bytes);
  return cta.window + off;
}

int pick(const char* kind, int natural, int n) {
  Config& c = loaded_cfg();
  std::lock_guard<std::mutex> lock(c.mu);
  auto it = c.force.find(kind);
  if (it == c.force.end()) return natural;
  const int v = it->second;
  if (n > 0 ? (v < 0 || v >= n) : v <= 0) return natural;
  return v;
}

void run_launch(const LaunchDesc& d) {
  Config& c = loaded_cfg();
  LaunchState L;
  L.d = &d;
  L.mangled = symbols().mangled(d.fn);
  L.name = L.mangled.empty() ? std::string(d.expr) : demangle(L.mangled);
  const uint64_t nthreads = uint64_t(d.block.x) * d.block.y * d.block.z;
  const uint64_t nctas = uint64_t(d.grid.x) * d.grid.y * d.grid.z;
  const std::string at = "cuda-sim: launch of " + L.name + " at " + where(d.site) + ": ";
  // The checks the driver makes (cudaErrorInvalidConfiguration / InvalidValue on a GPU).
  if (nthreads == 0 || nctas == 0)
    throw std::runtime_error(at + "empty grid or block " + dim_str(uint3{d.grid.x, d.grid.y, d.grid.z}) + " x " +
                             dim_str(uint3{d.block.x, d.block.y, d.block.z}));
  if (nthreads > 1024 || d.block.x > 1024 || d.block.y > 1024 || d.block.z > 64)
    throw std::runtime_error(at + "block " + dim_str(uint3{d.block.x, d.block.y, d.block.z}) +
                             " exceeds 1024 threads (or 1024 x 1024 x 64)");
  if (d.grid.x > 2147483647u || d.grid.y > 65535u || d.grid.z > 65535u)
    throw std::runtime_error(at + "grid " + dim_str(uint3{d.grid.x, d.grid.y, d.grid.z}) +
                             " exceeds 2^31-1 x 65535 x 65535");
  int bound = 0;
  int max_dyn = 48 * 1024;
  {
    std::lock_guard<std::mutex> lock(c.mu);
    auto it = c.bounds.find(L.mangled);
    if (it != c.bounds.end()) bound = it->second;
    c.launched.insert(L.mangled.empty() ? std::string(d.expr) : L.mangled);
  }
  if (bound > 0 && nthreads > uint64_t(bound))
    throw std::runtime_error(at + std::to_string(nthreads) + " threads per block exceed the kernel's __launch_bounds__ (" +
                             std::to_string(bound) + ")");
  {
    std::lock_guard<std::mutex> lock(g_attr_mu);
    auto it = g_max_dyn->find(d.fn);
    if (it != g_max_dyn->end()) max_dyn = std::max(max_dyn, it->second);
  }
  if (d.smem > kMaxDyn)
    throw std::runtime_error(at + std::to_string(d.smem) + " bytes of dynamic shared memory exceed the 227 KB per block of sm_90");
  if (d.smem > size_t(max_dyn))
    throw std::runtime_error(at + std::to_string(d.smem) + " bytes of dynamic shared memory exceed 48 KB without "
                             "cudaFuncSetAttribute(cudaFuncAttributeMaxDynamicSharedMemorySize) for this kernel" +
                             (max_dyn > 48 * 1024 ? " (set to " + std::to_string(max_dyn) + ")" : std::string()));
  L.nthreads = int(nthreads);

  int order;
  uint64_t seed;
  int threads;
  {
    std::lock_guard<std::mutex> lock(c.mu);
    order = c.order;
    seed = c.seed;
    threads = c.threads;
  }
  if (threads <= 0) threads = int(std::max(1u, std::thread::hardware_concurrency()));
  const int nworkers = int(std::min<uint64_t>(uint64_t(threads), nctas));

  std::atomic<uint64_t> next{0};
  std::atomic<bool> stop{false};
  std::mutex err_mu;
  uint64_t err_cta = ~uint64_t(0);
  std::string err;
  auto work = [&] {
    auto wk = take_worker();
    for (;;) {
      if (stop.load(std::memory_order_relaxed)) break;
      const uint64_t i = next.fetch_add(1);
      if (i >= nctas) break;
      const uint3 bid{unsigned(i % d.grid.x), unsigned((i / d.grid.x) % d.grid.y), unsigned(i / (uint64_t(d.grid.x) * d.grid.y))};
      std::string e;
      try {
        e = run_cta(*wk, L, bid, i, order, seed);
      } catch (const std::exception& ex) {
        e = "cuda-sim: kernel " + L.name + ", CTA " + dim_str(bid) + ": " + ex.what();
      }
      if (!e.empty()) {
        std::lock_guard<std::mutex> lock(err_mu);
        if (i < err_cta) {
          err_cta = i;
          err = e;
        }
        stop.store(true);
      }
    }
    give_worker(std::move(wk));
  };
  std::vector<std::thread> pool;
  for (int t = 1; t < nworkers; ++t) pool.emplace_back(work);
  work();
  for (auto& th : pool) th.join();
  if (!err.empty()) throw std::runtime_error(err);
}

// ---- control from the sim module ---------------------------------------------------------------
void set_threads(int n) {
  Config& c = loaded_cfg();
  std::lock_guard<std::mutex> lock(c.mu);
  c.threads = n;
}
void set_order(const std::string& o) {
  Config& c = loaded_cfg();
  std::lock_guard<std::mutex> lock(c.mu);
  parse_order_locked(c, o);
}
std::string get_order() {
  Config& c = loaded_cfg();
  std::lock_guard<std::mutex> lock(c.mu);
  return c.order == 0 ? "fwd" : c.order == 1 ? "rev" : "rand:" + std::to_string(c.seed);
}
void set_force(const std::map<std::string, int>& f) {
  Config& c = loaded_cfg();
  std::lock_guard<std::mutex> lock(c.mu);
  c.force = f;
}
std::map<std::string, int> get_force() {
  Config& c = loaded_cfg();
  std::lock_guard<std::mutex> lock(c.mu);
  return c.force;
}
void set_launch_bounds(const std::map<std::string, int>& b) {
  Config& c = loaded_cfg();
  std::lock_guard<std::mutex> lock(c.mu);
  c.bounds = b;
}
std::vector<std::string> launched(bool reset) {
  Config& c = loaded_cfg();
  std::lock_guard<std::mutex> lock(c.mu);
  std::vector<std::string> out(c.launched.begin(), c.launched.end());
  if (reset) c.launched.clear();
  return out;
}

}  // namespace simt
}  // namespace fastcnn

// The one CUDA runtime entry point the kernels' host code calls. Hidden (this module never links
// libcudart), so it cannot interpose on the real one in a process that has both.
extern "C" __attribute__((visibility("hidden"))) cudaError_t cudaFuncSetAttribute(const void* func,
                                                                                   cudaFuncAttribute attr, int value) {
  using namespace fastcnn::simt;
  if (attr != cudaFuncAttributeMaxDynamicSharedMemorySize) return cudaSuccess;
  if (value < 0 || size_t(value) > kMaxDyn) return cudaErrorInvalidValue;  // the driver refuses; the launch fails
  std::lock_guard<std::mutex> lock(g_attr_mu);
  (*g_max_dyn)[func] = value;
  return cudaSuccess;
}
