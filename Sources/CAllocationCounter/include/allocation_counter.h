// allocation_counter.h: how many heap allocations the calling thread made.
//
// skvm's executable interposes malloc, calloc, realloc, posix_memalign,
// aligned_alloc and memalign: each adds one to a thread-local counter and
// forwards to glibc's own implementation (__libc_malloc and friends). That
// is how `skvm bench exits` proves the run loop allocates nothing per exit:
// it reads the vCPU thread's count before and after the measured loop. The
// cost is one thread-local increment per allocation.
#ifndef ALLOCATION_COUNTER_H
#define ALLOCATION_COUNTER_H

/// Allocations made by the calling thread since it started.
unsigned long long skvm_thread_allocations(void);

#endif
