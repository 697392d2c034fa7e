/* The parallel-region entry used by the element-wise, BN, pooling, SE and
 * depthwise kernels (see k_par_run in kernels_internal.h). */
#ifdef _OPENMP
#include <omp.h>
#endif

#include "kernels_internal.h"

void k_par_run(int nt, k_par_fn fn, void *arg)
{
#ifdef _OPENMP
    if (nt > 1) {
#pragma omp parallel num_threads(nt)
        fn(arg, omp_get_thread_num(), omp_get_num_threads());
        return;
    }
#endif
    (void)nt;
    fn(arg, 0, 1);
}
