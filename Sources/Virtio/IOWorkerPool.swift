// IOWorkerPool.swift: a few threads for blocking host I/O, so that a device
// can have several requests in flight at once.
//
// A disk read blocks its thread for as long as the host disk takes; one
// thread serving a queue one request at a time leaves the host disk idle
// while the guest has eight requests waiting. QEMU's `aio=threads` answers
// with a thread pool, and so does skvm: a device hands a job to the pool
// when more than one request is waiting, and handles a lone request itself
// (no hand-off, so a single request pays no thread wake-up).
//
// Threads are started on demand, up to `maximumThreads`, by the `spawn`
// function the machine gives (skvm creates threads in one place,
// VMM/HostThread.swift). They sleep on a semaphore when there is no job.

#if canImport(Glibc)
import Glibc
#endif
import Synchronization

/// A pool of threads that run blocking jobs.
public final class IOWorkerPool: @unchecked Sendable {
    // SAFETY (@unchecked Sendable): the job list and counters are behind
    // `state`; the semaphore is a kernel-backed sem_t at a fixed address.

    /// Starts a thread running `body`; false when the host refuses.
    public typealias Spawn = (@escaping @Sendable () -> Void) -> Bool

    private struct State {
        var jobs: [@Sendable () -> Void] = []
        var threads = 0
        var idle = 0
        var stopping = false
    }

    private let spawn: Spawn
    public let maximumThreads: Int
    private let state = Mutex(State())
    private let semaphore: UnsafeMutablePointer<sem_t>

    public init(maximumThreads: Int, spawn: @escaping Spawn) {
        self.maximumThreads = max(1, maximumThreads)
        self.spawn = spawn
        semaphore = .allocate(capacity: 1)
        sem_init(semaphore, 0, 0)
    }

    deinit {
        sem_destroy(semaphore)
        semaphore.deallocate()
    }

    /// The threads started so far.
    public var threadCount: Int { state.withLock { $0.threads } }

    /// Queues `job`; starts a thread when none is idle and the pool may grow.
    /// Returns false when the pool is stopping or no thread could run it (then
    /// the caller runs the job itself).
    public func submit(_ job: @escaping @Sendable () -> Void) -> Bool {
        enum Admission { case refused, queued, queuedNeedsThread }
        let admission: Admission = state.withLock { s in
            guard !s.stopping else { return .refused }
            s.jobs.append(job)
            guard s.idle == 0 && s.threads < maximumThreads else { return .queued }
            s.threads += 1
            return .queuedNeedsThread
        }
        switch admission {
        case .refused:
            return false
        case .queuedNeedsThread where !spawn({ [self] in self.work() }):
            let orphaned: Bool = state.withLock { s in
                s.threads -= 1
                // No thread will ever take it: give the job back (only this thread submits).
                if s.threads == 0 { s.jobs.removeLast() }
                return s.threads == 0
            }
            if orphaned { return false }
        default:
            break
        }
        sem_post(semaphore)
        return true
    }

    /// Stops every thread once the queued jobs are done (the pool takes no more).
    public func shutdown() {
        let n = state.withLock { s -> Int in
            s.stopping = true
            return s.threads
        }
        for _ in 0..<n { sem_post(semaphore) }
    }

    private func work() {
        while true {
            state.withLock { $0.idle += 1 }
            while sem_wait(semaphore) != 0 {}  // EINTR: wait again
            let job: (@Sendable () -> Void)? = state.withLock { s in
                s.idle -= 1
                if s.jobs.isEmpty {
                    if s.stopping { s.threads -= 1 }
                    return nil
                }
                return s.jobs.removeFirst()
            }
            guard let job else {
                if state.withLock({ $0.stopping }) { return }
                continue
            }
            job()
        }
    }
}
