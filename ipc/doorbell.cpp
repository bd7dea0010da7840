#include "ipc/doorbell.hpp"

namespace bulkhead::ipc {

void Doorbell::wake() noexcept {
  // exchange: of several producers that saw `sleeping`, one pays the syscall;
  // the others see 0 and skip.  The seq bump makes a consumer that has not
  // yet entered futex_wait return from it at once.
  if (word_->sleeping.exchange(0, std::memory_order_acq_rel) == 0) return;
  word_->seq.fetch_add(1, std::memory_order_release);
  futex_wake(&word_->seq, 1);
}

}  // namespace bulkhead::ipc
