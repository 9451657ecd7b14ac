/* strom.storage._codec: the record codec's per-record loops in C (RecordBatch v2, DESIGN.md §4).

Three loops run once per record of every batch: the producer's encoder (`BatchBuilderCore.append`),
the leader's framing walk (`check_record_framing`) and the consumer's decoder (`decode_records`).
The pure-Python functions they mirror stay the reference (storage/record_batch.py,
storage/batch_validation.py, storage/record_decode.py), and tests/unit/test_codec_equivalence.py
runs both on the same inputs, valid and corrupted.

The contract every kernel keeps: it handles the common, well-formed case and hands anything else
to the reference (the two readers return None, and their Python callers then run the reference
on that batch; `append` calls the reference method itself). So every error a user ever sees is
raised by the reference, word for word, and this file holds no error messages. What a kernel must
never do is accept bytes the reference refuses, or answer differently from it: the tests check
both, and that the kernels really take the common case (a kernel that always declined would be
correct but slow).

Arithmetic: timestamps, offsets and lengths are 64-bit here where Python's are unbounded; any sum
that would overflow declines, and the reference refuses such batches too (a varint wider than 64
bits, a record timestamp outside int64).
*/

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <stdint.h>
#include <string.h>

#define HEADER_SIZE 61
#define TIMESTAMP_TYPE_MASK 0x08

/* Header tuple (storage/record_batch.py BatchHeader) field indexes. */
#define H_BASE_OFFSET 0
#define H_ATTRIBUTES 5
#define H_BASE_TIMESTAMP 7
#define H_MAX_TIMESTAMP 8
#define H_RECORD_COUNT 12
#define H_FIELDS 13

/* ---- varints ------------------------------------------------------------------------------ */

/* An unsigned base-128 varint at buf[*pos] that must end before `limit`: at most 10 bytes and 64
   bits, as the reference's _uvarint_slow. Returns 0, or -1 to decline. */
static inline int
read_uvarint(const uint8_t *buf, Py_ssize_t *pos, Py_ssize_t limit, uint64_t *out)
{
    Py_ssize_t p = *pos;
    if (p >= limit)
        return -1;
    uint8_t b = buf[p++];
    if (b < 0x80) { /* one byte: nearly every field of a small record */
        *out = b;
        *pos = p;
        return 0;
    }
    uint64_t value = b & 0x7F;
    for (int shift = 7; shift <= 63; shift += 7) {
        if (p >= limit)
            return -1;
        b = buf[p++];
        if (shift == 63 && b > 1)
            return -1; /* past 64 bits, or an 11th byte */
        value |= (uint64_t)(b & 0x7F) << shift;
        if (b < 0x80) {
            *out = value;
            *pos = p;
            return 0;
        }
    }
    return -1;
}

static inline int64_t
unzigzag(uint64_t raw)
{
    return (int64_t)(raw >> 1) ^ -(int64_t)(raw & 1);
}

static inline uint64_t
zigzag(int64_t value)
{
    return ((uint64_t)value << 1) ^ (uint64_t)(value >> 63);
}

static inline Py_ssize_t
uvarint_size(uint64_t value)
{
    Py_ssize_t size = 1;
    while (value >= 0x80) {
        value >>= 7;
        size++;
    }
    return size;
}

static inline uint8_t *
write_uvarint(uint8_t *out, uint64_t value)
{
    while (value >= 0x80) {
        *out++ = (uint8_t)((value & 0x7F) | 0x80);
        value >>= 7;
    }
    *out++ = (uint8_t)value;
    return out;
}

/* Header fields as int64, or -1 (error cleared) when `header` is not a 13-int tuple. */
static int
header_fields(PyObject *header, long long *base_offset, long long *attributes,
              long long *base_ts, long long *max_ts, long long *count)
{
    if (!PyTuple_Check(header) || PyTuple_GET_SIZE(header) < H_FIELDS)
        return -1;
    long long *targets[] = {base_offset, attributes, base_ts, max_ts, count};
    const int fields[] = {H_BASE_OFFSET, H_ATTRIBUTES, H_BASE_TIMESTAMP, H_MAX_TIMESTAMP,
                          H_RECORD_COUNT};
    for (int i = 0; i < 5; i++) {
        PyObject *item = PyTuple_GET_ITEM(header, fields[i]);
        int overflow = 0;
        if (!PyLong_Check(item))
            return -1;
        *targets[i] = PyLong_AsLongLongAndOverflow(item, &overflow);
        if (overflow || (*targets[i] == -1 && PyErr_Occurred())) {
            PyErr_Clear();
            return -1;
        }
    }
    return 0;
}

/* ---- the leader's framing walk ------------------------------------------------------------- */

/* Walk `count` records in buf[start:end]; 0 and the smallest timestamp, or -1 to decline. Reads
   are bounded by the record being walked: the reference reads on past a record's end only to
   refuse it when its fields and its length disagree. */
static int
walk_records(const uint8_t *buf, Py_ssize_t start, Py_ssize_t end, long long count,
             int64_t base_ts, int64_t max_ts, int log_append_time, int64_t *min_out)
{
    Py_ssize_t pos = start;
    int64_t max_seen = -1, min_seen = INT64_MAX; /* as the reference: max starts at NO_TIMESTAMP */
    uint64_t raw;
    for (long long index = 0; index < count; index++) {
        if (read_uvarint(buf, &pos, end, &raw))
            return -1;
        int64_t length = unzigzag(raw);
        if (length < 6 || length > end - pos)
            return -1;
        Py_ssize_t record_end = pos + (Py_ssize_t)length;
        pos += 1; /* attributes */
        if (read_uvarint(buf, &pos, record_end, &raw))
            return -1;
        int64_t ts;
        if (__builtin_add_overflow(base_ts, unzigzag(raw), &ts))
            return -1;
        if (ts > max_seen)
            max_seen = ts;
        if (ts < min_seen)
            min_seen = ts;
        if (read_uvarint(buf, &pos, record_end, &raw) || raw != (uint64_t)index << 1)
            return -1; /* offset deltas run 0..n-1 */
        for (int field = 0; field < 2; field++) { /* key, value: -1 is null */
            if (read_uvarint(buf, &pos, record_end, &raw))
                return -1;
            int64_t size = unzigzag(raw);
            if (size > 0) {
                if (size > record_end - pos)
                    return -1;
                pos += (Py_ssize_t)size;
            } else if (size < -1) {
                return -1;
            }
        }
        if (pos >= record_end)
            return -1;
        if (buf[pos] == 0) {
            pos++;
        } else {
            if (read_uvarint(buf, &pos, record_end, &raw))
                return -1;
            int64_t headers = unzigzag(raw);
            if (headers < 0)
                return -1;
            for (int64_t h = 0; h < headers; h++) {
                for (int nullable = 0; nullable < 2; nullable++) { /* key, then value */
                    if (read_uvarint(buf, &pos, record_end, &raw))
                        return -1;
                    int64_t size = unzigzag(raw);
                    if (size > 0) {
                        if (size > record_end - pos)
                            return -1;
                        pos += (Py_ssize_t)size;
                    } else if (size < (nullable ? -1 : 0)) {
                        return -1;
                    }
                }
            }
        }
        if (pos != record_end)
            return -1;
    }
    if (pos != end)
        return -1;
    if (!log_append_time && max_seen != max_ts)
        return -1;
    *min_out = min_seen;
    return 0;
}

PyDoc_STRVAR(check_record_framing_doc,
"check_record_framing(data, header, start=0, end=None) -> int | None\n\n"
"The smallest record timestamp of the uncompressed records in data[start:end], or None when\n"
"the reference (batch_validation.check_record_framing_py) must decide: it refuses the batch.");

static PyObject *
check_record_framing(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs < 2 || nargs > 4) {
        PyErr_SetString(PyExc_TypeError, "check_record_framing(data, header, start=0, end=None)");
        return NULL;
    }
    long long base_offset, attributes, base_ts, max_ts, count;
    if (header_fields(args[1], &base_offset, &attributes, &base_ts, &max_ts, &count))
        Py_RETURN_NONE;
    Py_buffer view;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE)) {
        PyErr_Clear();
        Py_RETURN_NONE;
    }
    Py_ssize_t start = 0, end = view.len;
    if (nargs > 2) {
        start = PyLong_Check(args[2]) ? PyLong_AsSsize_t(args[2]) : -1;
    }
    if (nargs > 3 && args[3] != Py_None) {
        end = PyLong_Check(args[3]) ? PyLong_AsSsize_t(args[3]) : -1;
    }
    int64_t min_ts = 0;
    int status = -1;
    if (PyErr_Occurred()) {
        PyErr_Clear();
    } else if (0 <= start && start <= end && end <= view.len) {
        status = walk_records((const uint8_t *)view.buf, start, end, count, base_ts, max_ts,
                              (attributes & TIMESTAMP_TYPE_MASK) != 0, &min_ts);
    }
    PyBuffer_Release(&view);
    if (status)
        Py_RETURN_NONE;
    return PyLong_FromLongLong(min_ts);
}

/* ---- the consumer's decoder ---------------------------------------------------------------- */

/* A key, value or header value: NULL on error (a Python error set), Py_None for a negative
   length, as the reference. `*decline` is set when the bytes run past the record. */
static PyObject *
read_bytes(const uint8_t *buf, Py_ssize_t *pos, Py_ssize_t record_end, int *decline)
{
    uint64_t raw;
    if (read_uvarint(buf, pos, record_end, &raw)) {
        *decline = 1;
        return NULL;
    }
    int64_t size = unzigzag(raw);
    if (size < 0)
        Py_RETURN_NONE;
    if (size > record_end - *pos) {
        *decline = 1;
        return NULL;
    }
    PyObject *out = PyBytes_FromStringAndSize((const char *)buf + *pos, (Py_ssize_t)size);
    *pos += (Py_ssize_t)size;
    return out;
}

/* The headers tuple of a record whose header count starts at buf[*pos]. */
static PyObject *
read_headers(const uint8_t *buf, Py_ssize_t *pos, Py_ssize_t record_end, int *decline)
{
    uint64_t raw;
    if (read_uvarint(buf, pos, record_end, &raw)) {
        *decline = 1;
        return NULL;
    }
    int64_t count = unzigzag(raw);
    /* Each header takes at least two bytes: a larger count cannot fit the record. */
    if (count < 0 || count > (record_end - *pos) / 2) {
        *decline = 1;
        return NULL;
    }
    PyObject *headers = PyTuple_New((Py_ssize_t)count);
    if (headers == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < (Py_ssize_t)count; i++) {
        if (read_uvarint(buf, pos, record_end, &raw))
            goto decline;
        int64_t size = unzigzag(raw);
        if (size < 0 || size > record_end - *pos)
            goto decline; /* a null key, or one past the record: the reference says which */
        PyObject *key = PyUnicode_DecodeUTF8((const char *)buf + *pos, (Py_ssize_t)size, NULL);
        if (key == NULL) {
            PyErr_Clear();
            goto decline;
        }
        *pos += (Py_ssize_t)size;
        PyObject *value = read_bytes(buf, pos, record_end, decline);
        if (value == NULL) {
            Py_DECREF(key);
            Py_DECREF(headers);
            return NULL;
        }
        PyObject *pair = PyTuple_Pack(2, key, value);
        Py_DECREF(key);
        Py_DECREF(value);
        if (pair == NULL) {
            Py_DECREF(headers);
            return NULL;
        }
        PyTuple_SET_ITEM(headers, i, pair);
    }
    return headers;
decline:
    *decline = 1;
    Py_DECREF(headers);
    return NULL;
}

/* One record_type instance (a tuple subclass) holding the seven fields; steals none. */
static PyObject *
make_record(PyTypeObject *record_type, PyObject *topic, PyObject *partition, int64_t offset,
            int64_t timestamp, PyObject *key, PyObject *value, PyObject *headers)
{
    PyObject *record = record_type == &PyTuple_Type ? PyTuple_New(7)
                                                     : record_type->tp_alloc(record_type, 7);
    if (record == NULL)
        return NULL;
    PyObject *offset_obj = PyLong_FromLongLong(offset);
    PyObject *timestamp_obj = PyLong_FromLongLong(timestamp);
    if (offset_obj == NULL || timestamp_obj == NULL) {
        Py_XDECREF(offset_obj);
        Py_XDECREF(timestamp_obj);
        Py_DECREF(record);
        return NULL;
    }
    Py_INCREF(topic);
    Py_INCREF(partition);
    Py_INCREF(key);
    Py_INCREF(value);
    Py_INCREF(headers);
    PyTuple_SET_ITEM(record, 0, topic);
    PyTuple_SET_ITEM(record, 1, partition);
    PyTuple_SET_ITEM(record, 2, offset_obj);
    PyTuple_SET_ITEM(record, 3, timestamp_obj);
    PyTuple_SET_ITEM(record, 4, key);
    PyTuple_SET_ITEM(record, 5, value);
    PyTuple_SET_ITEM(record, 6, headers);
    return record;
}

typedef struct {
    const uint8_t *buf;
    Py_ssize_t stop;
    int64_t base_offset, base_ts, max_ts, min_offset;
    int log_append_time;
    PyTypeObject *record_type;
    PyObject *topic, *partition, *no_headers, *out;
} DecodeJob;

/* Decode the record at buf[*pos] and append it to job->out if its offset is wanted. 0, 1 to
   decline (no Python error set), or -1 with a Python error. */
static int
decode_one(const DecodeJob *job, Py_ssize_t *pos)
{
    const uint8_t *buf = job->buf;
    PyObject *key = NULL, *value = NULL, *headers = NULL, *record = NULL;
    int decline = 0;
    uint64_t raw;
    if (read_uvarint(buf, pos, job->stop, &raw))
        return 1;
    int64_t length = unzigzag(raw);
    if (length < 0 || length > job->stop - *pos)
        return 1;
    Py_ssize_t record_end = *pos + (Py_ssize_t)length;
    *pos += 1; /* attributes */
    if (read_uvarint(buf, pos, record_end, &raw))
        return 1;
    int64_t ts_delta = unzigzag(raw), offset, timestamp = job->max_ts;
    if (read_uvarint(buf, pos, record_end, &raw) ||
        __builtin_add_overflow(job->base_offset, unzigzag(raw), &offset) ||
        (!job->log_append_time && __builtin_add_overflow(job->base_ts, ts_delta, &timestamp)))
        return 1;
    if ((key = read_bytes(buf, pos, record_end, &decline)) == NULL ||
        (value = read_bytes(buf, pos, record_end, &decline)) == NULL)
        goto fail;
    if (*pos >= record_end) {
        decline = 1;
        goto fail;
    }
    if (buf[*pos] == 0) {
        *pos += 1;
        headers = Py_NewRef(job->no_headers);
    } else if ((headers = read_headers(buf, pos, record_end, &decline)) == NULL) {
        goto fail;
    }
    if (*pos != record_end) {
        decline = 1;
        goto fail;
    }
    if (offset >= job->min_offset) {
        record = make_record(job->record_type, job->topic, job->partition, offset, timestamp, key,
                             value, headers);
        if (record == NULL || PyList_Append(job->out, record))
            goto fail;
        Py_DECREF(record);
    }
    Py_DECREF(key);
    Py_DECREF(value);
    Py_DECREF(headers);
    return 0;
fail:
    Py_XDECREF(key);
    Py_XDECREF(value);
    Py_XDECREF(headers);
    Py_XDECREF(record);
    return decline ? 1 : -1;
}

PyDoc_STRVAR(decode_records_doc,
"decode_records(buf, pos, stop, header, record_type, topic, partition, min_offset)\n"
"    -> list | None\n\n"
"The records of buf[pos:stop] (the uncompressed records of the batch `header` describes) from\n"
"offset min_offset on, as record_type tuples (topic, partition, offset, timestamp, key, value,\n"
"headers); None when the reference (record_decode._decode_records_py) must decide.");

static PyObject *
decode_records(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 8) {
        PyErr_SetString(PyExc_TypeError, "decode_records() takes 8 arguments");
        return NULL;
    }
    PyObject *data = args[0];
    PyObject *type_obj = args[4];
    long long base_offset, attributes, base_ts, max_ts, count;
    if (!PyBytes_CheckExact(data) || !PyType_Check(type_obj) ||
        header_fields(args[3], &base_offset, &attributes, &base_ts, &max_ts, &count))
        Py_RETURN_NONE;
    PyTypeObject *record_type = (PyTypeObject *)type_obj;
    /* A tuple, or a subclass that adds no fields (NamedTuple): its items live where a tuple's do. */
    if (!PyType_IsSubtype(record_type, &PyTuple_Type) ||
        record_type->tp_basicsize != PyTuple_Type.tp_basicsize ||
        record_type->tp_itemsize != PyTuple_Type.tp_itemsize || record_type->tp_dictoffset != 0)
        Py_RETURN_NONE;
    Py_ssize_t pos = PyLong_Check(args[1]) ? PyLong_AsSsize_t(args[1]) : -1;
    Py_ssize_t stop = PyLong_Check(args[2]) ? PyLong_AsSsize_t(args[2]) : -1;
    int overflow = 0;
    long long min_offset = PyLong_Check(args[7]) ? PyLong_AsLongLongAndOverflow(args[7], &overflow)
                                                  : 0;
    if (PyErr_Occurred() || overflow || !PyLong_Check(args[7])) {
        PyErr_Clear();
        Py_RETURN_NONE;
    }
    if (pos < 0 || pos > stop || stop > PyBytes_GET_SIZE(data))
        Py_RETURN_NONE;
    DecodeJob job = {
        .buf = (const uint8_t *)PyBytes_AS_STRING(data),
        .stop = stop,
        .base_offset = base_offset,
        .base_ts = base_ts,
        .max_ts = max_ts,
        .min_offset = min_offset,
        .log_append_time = (attributes & TIMESTAMP_TYPE_MASK) != 0,
        .record_type = record_type,
        .topic = args[5],
        .partition = args[6],
        .no_headers = PyTuple_New(0), /* the empty-tuple singleton, as the reference's () */
        .out = PyList_New(0),
    };
    int status = job.no_headers == NULL || job.out == NULL ? -1 : 0;
    for (long long index = 0; status == 0 && index < count; index++)
        status = decode_one(&job, &pos);
    if (status == 0 && pos != stop)
        status = 1;
    Py_XDECREF(job.no_headers);
    if (status == 0)
        return job.out;
    Py_XDECREF(job.out);
    if (status < 0)
        return NULL;
    Py_RETURN_NONE;
}

/* ---- the producer's encoder ---------------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    PyObject *buffer; /* a bytearray: HEADER_SIZE bytes of room, then the records */
    Py_ssize_t count;
    long long base_timestamp;
    long long max_timestamp;
} BuilderObject;

static int
builder_init(BuilderObject *self, PyObject *args, PyObject *kwargs)
{
    if (PyTuple_GET_SIZE(args) || (kwargs != NULL && PyDict_GET_SIZE(kwargs))) {
        PyErr_SetString(PyExc_TypeError, "BatchBuilder() takes no arguments");
        return -1;
    }
    PyObject *buffer = PyByteArray_FromStringAndSize(NULL, HEADER_SIZE);
    if (buffer == NULL)
        return -1;
    memset(PyByteArray_AS_STRING(buffer), 0, HEADER_SIZE);
    Py_XSETREF(self->buffer, buffer);
    self->count = 0;
    self->base_timestamp = -1;
    self->max_timestamp = -1;
    return 0;
}

static void
builder_dealloc(BuilderObject *self)
{
    Py_CLEAR(self->buffer);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* Anything off the fast path: the reference method `_append_reference` (the pure-Python
   BatchBuilder.append) runs on this object, whose state it reads and writes as attributes. */
static PyObject *
builder_append_reference(BuilderObject *self, PyObject *const *args, Py_ssize_t nargs,
                         PyObject *kwnames)
{
    PyObject *method = PyObject_GetAttrString((PyObject *)self, "_append_reference");
    if (method == NULL)
        return NULL;
    PyObject *result = PyObject_Vectorcall(method, args, (size_t)nargs, kwnames);
    Py_DECREF(method);
    return result;
}

typedef struct {
    const char *data;
    Py_ssize_t size; /* -1: null */
} Field;

/* A key or value: bytes or None only (else -1: the reference decides). */
static inline int
field_of(PyObject *obj, Field *field)
{
    if (obj == Py_None) {
        field->data = NULL;
        field->size = -1;
        return 0;
    }
    if (!PyBytes_CheckExact(obj))
        return -1;
    field->data = PyBytes_AS_STRING(obj);
    field->size = PyBytes_GET_SIZE(obj);
    return 0;
}

static inline Py_ssize_t
field_size(const Field *field)
{
    return field->size < 0 ? 1 : uvarint_size((uint64_t)field->size << 1) + field->size;
}

static inline uint8_t *
write_field(uint8_t *out, const Field *field)
{
    if (field->size < 0) {
        *out++ = 0x01; /* zigzag -1 */
        return out;
    }
    out = write_uvarint(out, (uint64_t)field->size << 1);
    memcpy(out, field->data, (size_t)field->size);
    return out + field->size;
}

#define HEADERS_FAST_MAX 16

PyDoc_STRVAR(builder_append_doc,
"append(timestamp_ms, key, value, headers=None) -> int\n\n"
"Encode one record at the next offset delta; returns the bytes it took (the reference:\n"
"record_batch.PyBatchBuilder.append, which runs for anything but bytes/None keys and values,\n"
"a non-negative int timestamp and up to 16 (str, bytes | None) header tuples).");

static PyObject *
builder_append(BuilderObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    if (kwnames != NULL || nargs < 3 || nargs > 4 || !PyLong_CheckExact(args[0]) ||
        self->buffer == NULL || !PyByteArray_CheckExact(self->buffer))
        return builder_append_reference(self, args, nargs, kwnames);
    int overflow = 0;
    long long ts = PyLong_AsLongLongAndOverflow(args[0], &overflow);
    Field key, value;
    if (overflow || ts < 0 || field_of(args[1], &key) || field_of(args[2], &value))
        return builder_append_reference(self, args, nargs, kwnames);
    PyObject *headers = nargs > 3 ? args[3] : Py_None;
    Py_ssize_t header_count = 0;
    Field header_keys[HEADERS_FAST_MAX], header_values[HEADERS_FAST_MAX];
    if (headers != Py_None) {
        if (!PyList_CheckExact(headers) && !PyTuple_CheckExact(headers))
            return builder_append_reference(self, args, nargs, kwnames);
        header_count = PySequence_Fast_GET_SIZE(headers);
        if (header_count > HEADERS_FAST_MAX)
            return builder_append_reference(self, args, nargs, kwnames);
        PyObject **items = PySequence_Fast_ITEMS(headers);
        for (Py_ssize_t i = 0; i < header_count; i++) {
            PyObject *pair = items[i];
            if (!PyTuple_CheckExact(pair) || PyTuple_GET_SIZE(pair) != 2 ||
                !PyUnicode_CheckExact(PyTuple_GET_ITEM(pair, 0)) ||
                field_of(PyTuple_GET_ITEM(pair, 1), &header_values[i]))
                return builder_append_reference(self, args, nargs, kwnames);
            header_keys[i].data =
                PyUnicode_AsUTF8AndSize(PyTuple_GET_ITEM(pair, 0), &header_keys[i].size);
            if (header_keys[i].data == NULL) { /* e.g. a lone surrogate: the reference raises */
                PyErr_Clear();
                return builder_append_reference(self, args, nargs, kwnames);
            }
        }
    }
    long long base = self->count == 0 ? ts : self->base_timestamp;
    /* Both timestamps are in [0, 2**63), so the delta fits. */
    uint64_t ts_zz = zigzag((int64_t)(ts - base));
    uint64_t od_zz = (uint64_t)self->count << 1;
    Py_ssize_t body = 1 + uvarint_size(ts_zz) + uvarint_size(od_zz) + field_size(&key) +
                      field_size(&value);
    if (header_count == 0) {
        body += 1;
    } else {
        body += uvarint_size((uint64_t)header_count << 1);
        for (Py_ssize_t i = 0; i < header_count; i++)
            body += field_size(&header_keys[i]) + field_size(&header_values[i]);
    }
    uint64_t body_zz = (uint64_t)body << 1;
    Py_ssize_t total = uvarint_size(body_zz) + body;
    Py_ssize_t old = PyByteArray_GET_SIZE(self->buffer);
    if (PyByteArray_Resize(self->buffer, old + total)) { /* e.g. exported: the reference raises */
        PyErr_Clear();
        return builder_append_reference(self, args, nargs, kwnames);
    }
    uint8_t *out = (uint8_t *)PyByteArray_AS_STRING(self->buffer) + old;
    out = write_uvarint(out, body_zz);
    *out++ = 0; /* attributes */
    out = write_uvarint(out, ts_zz);
    out = write_uvarint(out, od_zz);
    out = write_field(out, &key);
    out = write_field(out, &value);
    if (header_count == 0) {
        *out++ = 0;
    } else {
        out = write_uvarint(out, (uint64_t)header_count << 1);
        for (Py_ssize_t i = 0; i < header_count; i++) {
            out = write_field(out, &header_keys[i]);
            out = write_field(out, &header_values[i]);
        }
    }
    assert(out == (uint8_t *)PyByteArray_AS_STRING(self->buffer) + old + total);
    if (self->count == 0) {
        self->base_timestamp = self->max_timestamp = ts;
    } else if (ts > self->max_timestamp) {
        self->max_timestamp = ts;
    }
    self->count++;
    return PyLong_FromSsize_t(total);
}

static PyMethodDef builder_methods[] = {
    {"append", (PyCFunction)(void (*)(void))builder_append, METH_FASTCALL | METH_KEYWORDS,
     builder_append_doc},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef builder_members[] = {
    {"_buffer", T_OBJECT_EX, offsetof(BuilderObject, buffer), 0, "the batch so far"},
    {"count", T_PYSSIZET, offsetof(BuilderObject, count), 0, "records appended"},
    {"base_timestamp", T_LONGLONG, offsetof(BuilderObject, base_timestamp), 0,
     "the first record's timestamp (-1 before any)"},
    {"max_timestamp", T_LONGLONG, offsetof(BuilderObject, max_timestamp), 0,
     "the largest timestamp so far (-1 before any)"},
    {NULL, 0, 0, 0, NULL},
};

static PyTypeObject BuilderType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "strom.storage._codec.BatchBuilderCore",
    .tp_doc = PyDoc_STR("The state and append loop of record_batch.BatchBuilder, in C."),
    .tp_basicsize = sizeof(BuilderObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)builder_init,
    .tp_dealloc = (destructor)builder_dealloc,
    .tp_methods = builder_methods,
    .tp_members = builder_members,
};

/* ---- the module ---------------------------------------------------------------------------- */

static PyMethodDef codec_methods[] = {
    {"check_record_framing", (PyCFunction)(void (*)(void))check_record_framing, METH_FASTCALL,
     check_record_framing_doc},
    {"decode_records", (PyCFunction)(void (*)(void))decode_records, METH_FASTCALL,
     decode_records_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef codec_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "strom.storage._codec",
    .m_doc = PyDoc_STR("The record codec's per-record loops in C; see storage/compiled_codec.py."),
    .m_size = -1,
    .m_methods = codec_methods,
};

PyMODINIT_FUNC
PyInit__codec(void)
{
    if (PyType_Ready(&BuilderType) < 0)
        return NULL;
    PyObject *module = PyModule_Create(&codec_module);
    if (module == NULL)
        return NULL;
    Py_INCREF(&BuilderType);
    if (PyModule_AddObject(module, "BatchBuilderCore", (PyObject *)&BuilderType) < 0) {
        Py_DECREF(&BuilderType);
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
