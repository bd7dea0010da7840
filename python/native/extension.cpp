// bulkhead/_native.so: the extension module plain Python programs import.
#include "python/native/bindings.hpp"

PYBIND11_MODULE(_native, m) {
  bulkhead::python::define_native(m);
}
