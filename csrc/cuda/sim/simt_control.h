// cuda-sim's controls, for the sim module (fastcnn._C_cudasim) and its tests: scheduling order,
// host threads, forced dispatch choices, launch bounds from the nvcc build, and the record of the
// kernels that ran. See simt.h / simt.cpp.
#pragma once

#ifndef FASTCNN_SIMT
#error "simt_control.h is part of cuda-sim (-DFASTCNN_SIMT)"
#endif

#include <map>
#include <string>
#include <vector>

namespace fastcnn {
namespace simt {

void set_threads(int n);                    // host threads running CTAs; <= 0: the core count
void set_order(const std::string& order);   // "fwd", "rev" or "rand:<seed>"
std::string get_order();
void set_force(const std::map<std::string, int>& forced);  // FASTCNN_PICK kinds -> choice
std::map<std::string, int> get_force();
// Mangled kernel name -> its __launch_bounds__ maximum (from the nvcc build's objects); launches
// of a listed kernel with more threads fail as they would on the GPU.
void set_launch_bounds(const std::map<std::string, int>& bounds);
// Mangled names of the kernels launched since the last reset (the launch expression where the
// symbol table has no name).
std::vector<std::string> launched(bool reset);

}  // namespace simt
}  // namespace fastcnn
