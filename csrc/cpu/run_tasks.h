// Tasks handed out one at a time from a shared counter: for work split into pieces of uneven cost
// (NMS categories of different sizes, RoIs of different areas), where at::parallel_for's equal
// shares per thread leave one thread working while the others wait.
#pragma once

#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <cstdint>

namespace roiops {
namespace cpu {

// Runs body(task, state) for every task in [0, tasks) on at most max_threads threads of the pool
// (fewer when the pool or the task count is smaller; one: on the calling thread), each thread
// taking the next task when it is done with its last. Handing tasks out as threads free up keeps
// every thread busy when tasks differ in cost or a core is slowed by other processes. Callers make
// sure that which thread runs a task never changes a result (every task writes its own outputs).
// make_state() builds a thread's scratch once; body gets it as its second argument.
template <typename MakeState, typename Body>
void run_tasks(int64_t tasks, int64_t max_threads, MakeState make_state, Body body) {
  const int64_t threads = std::min<int64_t>({max_threads, static_cast<int64_t>(at::get_num_threads()), tasks});
  if (tasks <= 0) {
    return;
  }
  std::atomic<int64_t> next{0};
  const auto worker = [&] {
    auto state = make_state();
    for (int64_t task = next.fetch_add(1); task < tasks; task = next.fetch_add(1)) {
      body(task, state);
    }
  };
  if (threads <= 1) {
    worker();
    return;
  }
  at::parallel_for(0, threads, 1, [&](int64_t begin, int64_t end) {
    for (int64_t w = begin; w < end; ++w) {
      worker();  // a second call on one thread finds the tasks all taken
    }
  });
}

// run_tasks for a body that needs no scratch: body(task).
template <typename Body>
void run_tasks(int64_t tasks, int64_t max_threads, Body body) {
  run_tasks(tasks, max_threads, [] { return 0; }, [&](int64_t task, int) { body(task); });
}

}  // namespace cpu
}  // namespace roiops
