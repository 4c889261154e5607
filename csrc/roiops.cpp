// Every roiops operator schema, in one reviewable place. Kernels live in cpu/<op>.cpp and
// cuda/<op>.cu and register themselves with TORCH_LIBRARY_IMPL; fake (meta) kernels and autograd
// are registered from Python (roiops/_meta.py, roiops/_autograd.py).
//
// The module itself is empty: importing roiops._C only loads this library so that the static
// registrations below and in the kernel files run.

#include <Python.h>
#include <torch/library.h>

extern "C" {
PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {
      PyModuleDef_HEAD_INIT,
      "_C",  // name
      "roiops native kernels; use the roiops package, not this module",
      -1,    // no per-module state
      nullptr,
  };
  return PyModule_Create(&module_def);
}
}

TORCH_LIBRARY(roiops, m) {
  // ---- box ops -------------------------------------------------------------------------------
  // boxes1: [N, 4], boxes2: [M, 4], (x1, y1, x2, y2) -> IoU [N, M].
  m.def("box_iou(Tensor boxes1, Tensor boxes2) -> Tensor");
}
