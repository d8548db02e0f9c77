/* The C twin of fieldscan.py: the same two functions, the same answers (tests/proxy/test_fieldscan.py
 * checks them against each other). Read fieldscan.py first: it is the specification.
 *
 * A table is a bytes object: 256 flags (a name starts with this byte), then per name, in the dict's order,
 * its length, its kind and its bytes. `scan` walks a head's lines once (memchr for each line's LF), looks at
 * the first byte of each field line, and compares the line with the table's names only when a name starts
 * with that byte; it allocates nothing but its result. */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

#define FLAGS 256
#define STACK_FOUND (2 + 4 * 16) /* offsets kept on the stack: the usual head has a few fields of interest */

static PyObject *
fieldscan_table(PyObject *module, PyObject *kinds)
{
    PyObject *key, *value;
    Py_ssize_t pos = 0, size = FLAGS;

    if (!PyDict_Check(kinds)) {
        PyErr_SetString(PyExc_TypeError, "table() takes a dict of lowercase field names and kinds");
        return NULL;
    }
    while (PyDict_Next(kinds, &pos, &key, &value)) {
        if (!PyBytes_Check(key) || !PyLong_Check(value)) {
            PyErr_SetString(PyExc_TypeError, "table() takes a dict of lowercase field names and kinds");
            return NULL;
        }
        Py_ssize_t n = PyBytes_GET_SIZE(key);
        const char *name = PyBytes_AS_STRING(key);
        int overflow;
        long kind = PyLong_AsLongAndOverflow(value, &overflow);
        int upper = 0;
        for (Py_ssize_t i = 0; i < n; i++) {
            upper |= name[i] >= 'A' && name[i] <= 'Z';
        }
        if (n < 1 || n > 255 || upper || overflow || kind < 0 || kind > 255) {
            PyErr_Format(PyExc_ValueError,
                         "field names must be lowercase, 1-255 bytes, with a kind of 0-255: %R", key);
            return NULL;
        }
        size += 2 + n;
    }
    PyObject *out = PyBytes_FromStringAndSize(NULL, size);
    if (out == NULL) {
        return NULL;
    }
    unsigned char *flags = (unsigned char *)PyBytes_AS_STRING(out);
    unsigned char *entry = flags + FLAGS;
    memset(flags, 0, FLAGS);
    pos = 0;
    while (PyDict_Next(kinds, &pos, &key, &value)) {
        Py_ssize_t n = PyBytes_GET_SIZE(key);
        const unsigned char *name = (const unsigned char *)PyBytes_AS_STRING(key);
        flags[name[0]] = 1;
        entry[0] = (unsigned char)n;
        entry[1] = (unsigned char)PyLong_AsLong(value);
        memcpy(entry + 2, name, n);
        entry += 2 + n;
    }
    return out;
}

/* Where the first CRLF at or after `from` starts, or NULL: the first LF after `from` with a CR before it. */
static const unsigned char *
next_crlf(const unsigned char *from, const unsigned char *end)
{
    const unsigned char *p = from + 1;
    while (p < end) {
        const unsigned char *lf = memchr(p, '\n', end - p);
        if (lf == NULL) {
            return NULL;
        }
        if (lf[-1] == '\r') {
            return lf - 1;
        }
        p = lf + 1;
    }
    return NULL;
}

static PyObject *
fieldscan_scan(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3 || !PyBytes_Check(args[0]) || !PyBytes_Check(args[2]) || PyBytes_GET_SIZE(args[2]) < FLAGS) {
        PyErr_SetString(PyExc_TypeError, "scan() takes a head's bytes, where it starts, and a table()");
        return NULL;
    }
    if (!PyLong_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "scan() takes a head's bytes, where it starts, and a table()");
        return NULL;
    }
    Py_ssize_t start = PyLong_AsSsize_t(args[1]);
    if (start == -1 && PyErr_Occurred()) {
        if (!PyErr_ExceptionMatches(PyExc_OverflowError)) {
            return NULL;
        }
        PyErr_Clear(); /* past any bytes object's end, either way: None, as fieldscan.py says */
        Py_RETURN_NONE;
    }
    const unsigned char *buf = (const unsigned char *)PyBytes_AS_STRING(args[0]);
    Py_ssize_t len = PyBytes_GET_SIZE(args[0]);
    if (start < 0 || start > len) {
        Py_RETURN_NONE;
    }
    const unsigned char *flags = (const unsigned char *)PyBytes_AS_STRING(args[2]);
    const unsigned char *entries = flags + FLAGS, *entries_end = flags + PyBytes_GET_SIZE(args[2]);
    const unsigned char *base = buf + start, *end = buf + len;

    Py_ssize_t stack[STACK_FOUND];
    Py_ssize_t *found = stack, capacity = STACK_FOUND, count = 2;
    PyObject *result = NULL;

    const unsigned char *eol = next_crlf(base, end); /* (an empty first line too: its LF is at base + 1) */
    if (eol == NULL) {
        Py_RETURN_NONE;
    }
    found[1] = eol - base;
    const unsigned char *line = eol + 2;
    for (;;) {
        if (end - line >= 2 && line[0] == '\r' && line[1] == '\n') {
            found[0] = line + 2 - base;
            break;
        }
        eol = line < end ? next_crlf(line, end) : NULL;
        if (eol == NULL) {
            goto done; /* not complete: None */
        }
        if (flags[line[0] | 32]) {
            Py_ssize_t length = eol - line;
            for (const unsigned char *e = entries; e < entries_end; e += 2 + e[0]) {
                Py_ssize_t n = e[0], i = 0;
                if (length <= n || line[n] != ':') {
                    continue;
                }
                while (i < n && (line[i] | 32) == e[2 + i]) {
                    i++;
                }
                if (i < n) {
                    continue;
                }
                if (count + 4 > capacity) {
                    Py_ssize_t *grown = PyMem_Malloc(2 * capacity * sizeof(Py_ssize_t));
                    if (grown == NULL) {
                        PyErr_NoMemory();
                        goto done;
                    }
                    memcpy(grown, found, count * sizeof(Py_ssize_t));
                    if (found != stack) {
                        PyMem_Free(found);
                    }
                    found = grown;
                    capacity *= 2;
                }
                found[count++] = e[1];
                found[count++] = line - base;
                found[count++] = line - base + n + 1;
                found[count++] = eol - base;
                break;
            }
        }
        line = eol + 2;
    }
    result = PyList_New(count);
    if (result != NULL) {
        for (Py_ssize_t i = 0; i < count; i++) {
            PyObject *number = PyLong_FromSsize_t(found[i]);
            if (number == NULL) {
                Py_CLEAR(result);
                break;
            }
            PyList_SET_ITEM(result, i, number);
        }
    }
done:
    if (found != stack) {
        PyMem_Free(found);
    }
    if (result == NULL && !PyErr_Occurred()) {
        Py_RETURN_NONE;
    }
    return result;
}

static PyMethodDef fieldscan_methods[] = {
    {"table", (PyCFunction)fieldscan_table, METH_O, "A dict of lowercase field names and kinds, as scan() reads it."},
    {"scan", (PyCFunction)(void (*)(void))fieldscan_scan, METH_FASTCALL,
     "scan(data, start, table): the head at start, or None: see fieldscan.py."},
    {NULL, NULL, 0, NULL},
};

static int
fieldscan_exec(PyObject *module)
{
    return PyModule_AddStringConstant(module, "IMPLEMENTATION", "C");
}

static PyModuleDef_Slot fieldscan_slots[] = {
    {Py_mod_exec, fieldscan_exec},
    {0, NULL},
};

static struct PyModuleDef fieldscan_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "proxy.dataplane.fieldscan",
    .m_doc = "The C twin of fieldscan.py: a head's length and the fields of it the proxy acts on.",
    .m_size = 0,
    .m_methods = fieldscan_methods,
    .m_slots = fieldscan_slots,
};

PyMODINIT_FUNC
PyInit_fieldscan(void)
{
    return PyModuleDef_Init(&fieldscan_module);
}
