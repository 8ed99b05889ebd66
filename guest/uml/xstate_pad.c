// SPDX-License-Identifier: MIT
//
// xstate_pad.so: an LD_PRELOAD helper for Debian's User-Mode Linux 6.1 (and 6.12) on hosts whose
// XSAVE area is larger than UML expects.
//
// Root cause. UML saves and restores a userspace process's FPU state with
// ptrace(PTRACE_GETREGSET/PTRACE_SETREGSET, NT_X86_XSTATE) into a buffer of a size fixed when UML
// was built (HOST_FP_SIZE, arch/x86/um/user-offsets.c: 2696 bytes, AVX-512 + PKRU). The host
// kernel's SETREGSET for NT_X86_XSTATE insists on a whole standard-format XSAVE image
// (arch/x86/kernel/fpu/regset.c, xstateregs_set: `count != fpu_user_cfg.max_size` -> -EFAULT).
// On a host with AMX the image is 11008 bytes, so every return to a UML userspace process fails
// ("userspace - ptrace set fp regs failed, errno = 14") and init dies. GETREGSET with a short
// buffer is fine (the kernel truncates). Upstream UML sizes the buffer from CPUID leaf 0xD since
// 6.13.
//
// The fix. A short SETREGSET(NT_X86_XSTATE) is completed to the host's full size: the tracee's
// current image is read (GETREGSET with a buffer large enough; the kernel reports the exact
// size back in iov_len), UML's bytes replace its prefix, and every state component that does not
// lie wholly inside UML's buffer keeps the tracee's current contents (and its XSTATE_BV bit).
// UML's view wins for what UML knows about; the rest is left as it was. Every other ptrace call
// goes straight to libc.
//
// Built by scripts/uml.sh (cc -shared -fPIC -O2) and used only for the UML kernel process.

#define _GNU_SOURCE
#include <cpuid.h>
#include <dlfcn.h>
#include <elf.h>
#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/types.h>
#include <sys/uio.h>

#ifndef NT_X86_XSTATE
#define NT_X86_XSTATE 0x202
#endif

// Offset of XSTATE_BV in the standard-format XSAVE image (after the 512-byte legacy area).
#define XSTATE_BV_OFFSET 512
// Room for the largest XSAVE image we accept (AMX hosts need 11008 bytes today).
#define BUF_SIZE (64 * 1024)

typedef long (*ptrace_fn)(int, pid_t, void *, void *);

// UML calls ptrace from one host thread at a time; the lock only guards against surprises.
static unsigned char image[BUF_SIZE] __attribute__((aligned(64)));
static int image_lock;
// The host's full image size, once seen (0: not yet known).
static size_t host_size;

static ptrace_fn real_ptrace(void) {
  static ptrace_fn fn;
  if (!fn) fn = (ptrace_fn)dlsym(RTLD_NEXT, "ptrace");
  return fn;
}

// Whether state component `i` (2..62) lies wholly inside the first `len` bytes of a
// standard-format image. A component CPUID does not describe is treated as outside.
static int component_within(unsigned i, size_t len) {
  unsigned size, offset, ecx, edx;
  if (!__get_cpuid_count(0xd, i, &size, &offset, &ecx, &edx)) return 0;
  if (size == 0) return 0;
  // Supervisor components (ECX bit 0) never appear in the user image.
  if (ecx & 1) return 1;
  return (size_t)offset + size <= len;
}

static long set_padded(ptrace_fn fn, pid_t pid, struct iovec *uml) {
  while (__atomic_exchange_n(&image_lock, 1, __ATOMIC_ACQUIRE)) {
  }
  long ret;
  struct iovec full = {.iov_base = image, .iov_len = sizeof image};
  if (fn(PTRACE_GETREGSET, pid, (void *)NT_X86_XSTATE, &full) < 0) {
    ret = -1;
    goto out;
  }
  __atomic_store_n(&host_size, full.iov_len, __ATOMIC_RELAXED);
  if (full.iov_len <= uml->iov_len || uml->iov_len < XSTATE_BV_OFFSET + 8) {
    // Not a short write after all (or not an XSAVE image): let the kernel judge it as it is.
    __atomic_store_n(&image_lock, 0, __ATOMIC_RELEASE);
    return fn(PTRACE_SETREGSET, pid, (void *)NT_X86_XSTATE, uml);
  }
  uint64_t current_bv, uml_bv;
  memcpy(&current_bv, image + XSTATE_BV_OFFSET, sizeof current_bv);
  memcpy(&uml_bv, (const unsigned char *)uml->iov_base + XSTATE_BV_OFFSET, sizeof uml_bv);
  memcpy(image, uml->iov_base, uml->iov_len);
  for (unsigned i = 2; i < 63; i++) {
    uint64_t bit = 1ull << i;
    if (!component_within(i, uml->iov_len)) uml_bv = (uml_bv & ~bit) | (current_bv & bit);
  }
  memcpy(image + XSTATE_BV_OFFSET, &uml_bv, sizeof uml_bv);
  ret = fn(PTRACE_SETREGSET, pid, (void *)NT_X86_XSTATE, &full);
out:
  __atomic_store_n(&image_lock, 0, __ATOMIC_RELEASE);
  return ret;
}

long ptrace(enum __ptrace_request request, ...) {
  va_list ap;
  va_start(ap, request);
  pid_t pid = va_arg(ap, pid_t);
  void *addr = va_arg(ap, void *);
  void *data = va_arg(ap, void *);
  va_end(ap);
  ptrace_fn fn = real_ptrace();
  if (!fn) {
    errno = ENOSYS;
    return -1;
  }
  if (request == PTRACE_SETREGSET && (uintptr_t)addr == NT_X86_XSTATE && data) {
    struct iovec *iov = data;
    size_t known = __atomic_load_n(&host_size, __ATOMIC_RELAXED);
    if (iov->iov_len < BUF_SIZE && (known == 0 || iov->iov_len < known))
      return set_padded(fn, pid, iov);
  }
  return fn((int)request, pid, addr, data);
}

#ifdef XSTATE_PAD_PROBE
// Built as a program (-DXSTATE_PAD_PROBE): prints the host's XSAVE image size for the features
// enabled in XCR0 (CPUID leaf 0xD, EBX), for scripts/uml.sh's messages.
#include <stdio.h>
int main(void) {
  unsigned eax, ebx, ecx, edx;
  if (!__get_cpuid_count(0xd, 0, &eax, &ebx, &ecx, &edx)) return 1;
  printf("%u\n", ebx);
  return 0;
}
#endif
