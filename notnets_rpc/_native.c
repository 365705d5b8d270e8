/* notnets_rpc._native: the few things Python cannot do on shared CXL memory.
 *
 * A CXL device shared by several hosts is not kept coherent between them: a store
 * stays in the writer's cache until it is written back, and a reader keeps its own
 * cached copy of a line until it invalidates it (docs/coherence.md). This module
 * executes the x86 cache-line instructions for that:
 *   writeback(buf, off, n)   CLWB (else CLFLUSHOPT, else CLFLUSH) per 64-byte line, SFENCE
 *   invalidate(buf, off, n)  CLFLUSHOPT (else CLFLUSH) per line, MFENCE
 *   fence()                  MFENCE
 * The instruction is chosen once from CPUID; features() says which one runs.
 * And waiting on a word of a shared mapping without the GIL (Linux):
 *   futex_wait(address, expected, timeout) -> bool   FUTEX_WAIT on the 32-bit word
 *   futex_wake(address)                               FUTEX_WAKE every waiter
 * the same system calls memory.py's ctypes fallback makes, without ctypes' cost per
 * call (3.5 us for a wake, 6.5 us for a wait that returns at once, measured here).
 * notnets_rpc/cxl.py is the public face; it falls back to pure Python when this
 * module was not built. Built by `make setup` (scripts/build_native.sh).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#ifdef __linux__
#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <stdint.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#endif

#if defined(__x86_64__) || defined(__i386__)
#define NN_X86 1
#include <cpuid.h>
#include <immintrin.h>
#else
#define NN_X86 0
#endif

#define LINE 64
#define NOGIL_BYTES (256 * 1024) /* longer ranges drop the GIL while they run */

enum { I_NONE = 0, I_CLFLUSH = 1, I_CLFLUSHOPT = 2, I_CLWB = 3 };
static const char *const I_NAMES[] = {"none", "clflush", "clflushopt", "clwb"};

static int has_clflush, has_clflushopt, has_clwb;
static int wb_insn = I_NONE;   /* what writeback() runs per line */
static int inv_insn = I_NONE;  /* what invalidate() runs per line */

#if NN_X86
__attribute__((target("clflushopt"))) static void lines_clflushopt(char *p, char *end) {
    for (; p < end; p += LINE) _mm_clflushopt(p);
}
__attribute__((target("clwb"))) static void lines_clwb(char *p, char *end) {
    for (; p < end; p += LINE) _mm_clwb(p);
}
static void lines_clflush(char *p, char *end) {
    for (; p < end; p += LINE) _mm_clflush(p);
}
#endif

static void run_lines(int insn, char *p, char *end) {
#if NN_X86
    switch (insn) {
    case I_CLWB: lines_clwb(p, end); break;
    case I_CLFLUSHOPT: lines_clflushopt(p, end); break;
    case I_CLFLUSH: lines_clflush(p, end); break;
    default: break;
    }
#else
    (void)insn; (void)p; (void)end;
#endif
}

static void sfence(void) {
#if NN_X86
    _mm_sfence();
#else
    __sync_synchronize();
#endif
}

static void mfence(void) {
#if NN_X86
    _mm_mfence();
#else
    __sync_synchronize();
#endif
}

static void probe(void) {
#if NN_X86
    unsigned a, b, c, d;
    if (__get_cpuid(1, &a, &b, &c, &d)) has_clflush = (d >> 19) & 1;
    if (__get_cpuid_max(0, NULL) >= 7 && __get_cpuid_count(7, 0, &a, &b, &c, &d)) {
        has_clflushopt = (b >> 23) & 1;
        has_clwb = (b >> 24) & 1;
    }
#endif
    wb_insn = has_clwb ? I_CLWB : has_clflushopt ? I_CLFLUSHOPT : has_clflush ? I_CLFLUSH : I_NONE;
    inv_insn = has_clflushopt ? I_CLFLUSHOPT : has_clflush ? I_CLFLUSH : I_NONE;
}

/* The lines of buf[off, off+n): parses (buffer, offset, length) and checks the range. */
static int line_range(PyObject *const *args, Py_ssize_t nargs, const char *fn, Py_buffer *view,
                      char **start, char **end) {
    if (nargs != 3) {
        PyErr_Format(PyExc_TypeError, "%s(buffer, offset, length) takes 3 arguments, got %zd", fn, nargs);
        return -1;
    }
    Py_ssize_t off = PyLong_AsSsize_t(args[1]);
    if (off == -1 && PyErr_Occurred()) return -1;
    Py_ssize_t n = PyLong_AsSsize_t(args[2]);
    if (n == -1 && PyErr_Occurred()) return -1;
    if (PyObject_GetBuffer(args[0], view, PyBUF_SIMPLE) < 0) return -1;
    if (off < 0 || n < 0 || off > view->len || n > view->len - off) {
        PyErr_Format(PyExc_ValueError, "%s: range [%zd, %zd) outside the buffer (size %zd)", fn, off,
                     off + n, view->len);
        PyBuffer_Release(view);
        return -1;
    }
    uintptr_t a = (uintptr_t)view->buf + (uintptr_t)off;
    *start = (char *)(a & ~(uintptr_t)(LINE - 1));
    *end = (char *)(a + (uintptr_t)n);
    return 0;
}

static PyObject *lines_then(int insn, void (*fence_fn)(void), PyObject *const *args, Py_ssize_t nargs,
                            const char *fn) {
    Py_buffer view;
    char *p, *end;
    if (line_range(args, nargs, fn, &view, &p, &end) < 0) return NULL;
    if (end - p >= NOGIL_BYTES) {
        Py_BEGIN_ALLOW_THREADS
        run_lines(insn, p, end);
        fence_fn();
        Py_END_ALLOW_THREADS
    } else {
        run_lines(insn, p, end);
        fence_fn();
    }
    PyBuffer_Release(&view);
    Py_RETURN_NONE;
}

static PyObject *nn_writeback(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    return lines_then(wb_insn, sfence, args, nargs, "writeback");
}

static PyObject *nn_invalidate(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    return lines_then(inv_insn, mfence, args, nargs, "invalidate");
}

static PyObject *nn_fence(PyObject *self, PyObject *unused) {
    mfence();
    Py_RETURN_NONE;
}

#ifdef __linux__
/* futex_wait(address, expected, timeout): sleep while the 32-bit word at address equals
 * expected (its low 32 bits), until woken or timeout seconds. True when the wait happened
 * or did not need to (EAGAIN, ETIMEDOUT, EINTR); False when the kernel refuses the word
 * (EFAULT, EINVAL, ENOSYS): the caller polls from then on. A shared futex, keyed by the
 * mapped file and offset, so that processes mapping the same pool wake each other. */
static PyObject *nn_futex_wait(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 3) {
        PyErr_Format(PyExc_TypeError, "futex_wait(address, expected, timeout) takes 3 arguments, got %zd", nargs);
        return NULL;
    }
    void *addr = PyLong_AsVoidPtr(args[0]);
    if (addr == NULL && PyErr_Occurred()) return NULL;
    unsigned long long expected = PyLong_AsUnsignedLongLongMask(args[1]);
    if (expected == (unsigned long long)-1 && PyErr_Occurred()) return NULL;
    double timeout = PyFloat_AsDouble(args[2]);
    if (timeout == -1.0 && PyErr_Occurred()) return NULL;
    if (!(timeout > 0)) timeout = 0;
    if (timeout > 86400) timeout = 86400;
    struct timespec ts;
    ts.tv_sec = (time_t)timeout;
    ts.tv_nsec = (long)((timeout - (double)ts.tv_sec) * 1e9);
    long r;
    int err = 0;
    Py_BEGIN_ALLOW_THREADS
    r = syscall(SYS_futex, addr, FUTEX_WAIT, (uint32_t)expected, &ts, NULL, 0);
    if (r == -1) err = errno;
    Py_END_ALLOW_THREADS
    if (r == -1 && err != EAGAIN && err != ETIMEDOUT && err != EINTR) Py_RETURN_FALSE;
    Py_RETURN_TRUE;
}

/* futex_wake(address): wake whoever sleeps on the word at address (no-op if nobody). */
static PyObject *nn_futex_wake(PyObject *self, PyObject *arg) {
    void *addr = PyLong_AsVoidPtr(arg);
    if (addr == NULL && PyErr_Occurred()) return NULL;
    syscall(SYS_futex, addr, FUTEX_WAKE, INT_MAX, NULL, NULL, 0);
    Py_RETURN_NONE;
}
#endif

static PyObject *nn_features(PyObject *self, PyObject *unused) {
    return Py_BuildValue("{s:O,s:O,s:O,s:s,s:s}", "clflush", has_clflush ? Py_True : Py_False,
                         "clflushopt", has_clflushopt ? Py_True : Py_False, "clwb",
                         has_clwb ? Py_True : Py_False, "writeback", I_NAMES[wb_insn], "invalidate",
                         I_NAMES[inv_insn]);
}

/* use(name): make writeback and invalidate use an older instruction than the best one
 * ("clflush", "clflushopt", "clwb" for writeback only, or "best"), so that tests run each
 * path this CPU has. Refuses what CPUID does not report. */
static PyObject *nn_use(PyObject *self, PyObject *arg) {
    const char *name = PyUnicode_AsUTF8(arg);
    if (name == NULL) return NULL;
    if (strcmp(name, "best") == 0) {
        probe();
    } else if (strcmp(name, "clflush") == 0 && has_clflush) {
        wb_insn = inv_insn = I_CLFLUSH;
    } else if (strcmp(name, "clflushopt") == 0 && has_clflushopt) {
        wb_insn = inv_insn = I_CLFLUSHOPT;
    } else if (strcmp(name, "clwb") == 0 && has_clwb) {
        probe();
        wb_insn = I_CLWB;
    } else {
        PyErr_Format(PyExc_ValueError, "use: %R is not an instruction this CPU reports", arg);
        return NULL;
    }
    return nn_features(self, NULL);
}

static PyMethodDef methods[] = {
    {"writeback", (PyCFunction)(void (*)(void))nn_writeback, METH_FASTCALL,
     "writeback(buffer, offset, length): write the lines of the range back to memory, then SFENCE."},
    {"invalidate", (PyCFunction)(void (*)(void))nn_invalidate, METH_FASTCALL,
     "invalidate(buffer, offset, length): write back and drop the lines of the range, then MFENCE."},
    {"fence", nn_fence, METH_NOARGS, "fence(): MFENCE."},
    {"features", nn_features, METH_NOARGS, "features(): what CPUID reports and which instruction runs."},
    {"use", nn_use, METH_O, "use(name): pick the instruction (for tests); returns features()."},
#ifdef __linux__
    {"futex_wait", (PyCFunction)(void (*)(void))nn_futex_wait, METH_FASTCALL,
     "futex_wait(address, expected, timeout): FUTEX_WAIT on a shared word without the GIL; False if refused."},
    {"futex_wake", nn_futex_wake, METH_O, "futex_wake(address): FUTEX_WAKE every waiter on the word."},
#endif
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_native",
                                    "Cache-line write-back, invalidate and fences (see cxl.py).", -1,
                                    methods};

PyMODINIT_FUNC PyInit__native(void) {
    probe();
    PyObject *m = PyModule_Create(&module);
    if (m != NULL && PyModule_AddIntConstant(m, "LINE", LINE) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
