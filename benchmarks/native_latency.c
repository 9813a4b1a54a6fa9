/* Times a SavedModel signature through the TensorFlow C API, as a C++ model
 * server (TF Serving) runs it: no Python between the request and the graph.
 *
 *   native_latency SPEC_FILE
 *
 * The spec file (written by benchmarks/native_latency.py) holds one item per
 * line:
 *
 *   export DIR                  the SavedModel version folder
 *   calls N                     single-row calls timed
 *   batch B                     rows of the batch call
 *   intra_op N                  intra-op threads (default 1)
 *   inter_op N                  inter-op threads (default -1: every op runs
 *                               in the calling thread, no hand-off to a
 *                               pool thread)
 *   input OP DTYPE WIDTH FILE   a feed: OP's output 0, DTYPE float32 | int32,
 *                               rows of WIDTH values (WIDTH 0: a vector, one
 *                               value per row) read from the raw little-endian
 *                               FILE
 *   output OP INDEX             a fetch
 *
 * Every input file holds the same number of rows. Call i sends row
 * i % rows of every input (the request tensors are built inside the timed
 * span, as a server builds them from a request); 20 untimed calls warm up
 * first. Prints
 * one JSON line: load seconds, p50 / p99 ms of the single-row calls, rows
 * per second of one B-row call (median of 3).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tensorflow/c/c_api.h"

#define MAX_IO 8

typedef struct {
  char op[512];
  TF_DataType dtype;
  int width;
  size_t value_bytes;
  size_t rows;
  char *data;
} Input;

static void die(const char *what, const char *detail) {
  fprintf(stderr, "native_latency: %s%s%s\n", what, detail ? ": " : "",
          detail ? detail : "");
  exit(1);
}

static void check(TF_Status *status, const char *what) {
  if (TF_GetCode(status) != TF_OK) die(what, TF_Message(status));
}

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + 1e-9 * t.tv_nsec;
}

static char *read_file(const char *path, size_t *size) {
  FILE *f = fopen(path, "rb");
  if (!f) die("cannot open", path);
  fseek(f, 0, SEEK_END);
  *size = (size_t)ftell(f);
  fseek(f, 0, SEEK_SET);
  char *data = malloc(*size ? *size : 1);
  if (*size && fread(data, 1, *size, f) != *size) die("cannot read", path);
  fclose(f);
  return data;
}

/* A tensor of `count` rows of `input`, rows first, first + 1, ... (mod). */
static TF_Tensor *rows_tensor(const Input *input, size_t first,
                              size_t count) {
  size_t row_bytes = input->value_bytes * (input->width ? input->width : 1);
  int64_t dims[2] = {(int64_t)count, input->width};
  TF_Tensor *t = TF_AllocateTensor(input->dtype, dims, input->width ? 2 : 1,
                                   row_bytes * count);
  char *out = TF_TensorData(t);
  for (size_t r = 0; r < count; ++r)
    memcpy(out + r * row_bytes,
           input->data + ((first + r) % input->rows) * row_bytes, row_bytes);
  return t;
}

/* Appends protobuf varint field `field` = `value` (int32 semantics: a
 * negative value takes 10 bytes) to `out`; returns the bytes written. */
static size_t put_varint_field(unsigned char *out, int field, int value) {
  size_t n = 0;
  uint64_t v = (uint64_t)(int64_t)value;
  out[n++] = (unsigned char)(field << 3);
  do {
    out[n] = v & 0x7f;
    v >>= 7;
    if (v) out[n] |= 0x80;
    ++n;
  } while (v);
  return n;
}

static int compare(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

int main(int argc, char **argv) {
  if (argc != 2) die("usage: native_latency SPEC_FILE", NULL);
  FILE *spec = fopen(argv[1], "r");
  if (!spec) die("cannot open", argv[1]);
  char export_dir[4096] = "", key[32], line[8192];
  int calls = 200, batch = 1000, num_inputs = 0, num_outputs = 0;
  int intra_op = 1, inter_op = -1;
  Input inputs[MAX_IO];
  char output_ops[MAX_IO][512];
  int output_index[MAX_IO];
  while (fgets(line, sizeof line, spec)) {
    if (sscanf(line, "%31s", key) != 1) continue;
    if (!strcmp(key, "export")) {
      sscanf(line, "%*s %4095s", export_dir);
    } else if (!strcmp(key, "calls")) {
      sscanf(line, "%*s %d", &calls);
    } else if (!strcmp(key, "batch")) {
      sscanf(line, "%*s %d", &batch);
    } else if (!strcmp(key, "intra_op")) {
      sscanf(line, "%*s %d", &intra_op);
    } else if (!strcmp(key, "inter_op")) {
      sscanf(line, "%*s %d", &inter_op);
    } else if (!strcmp(key, "input") && num_inputs < MAX_IO) {
      Input *in = &inputs[num_inputs++];
      char dtype[16], path[4096];
      size_t size;
      if (sscanf(line, "%*s %511s %15s %d %4095s", in->op, dtype, &in->width,
                 path) != 4)
        die("bad input line", line);
      if (!strcmp(dtype, "float32")) {
        in->dtype = TF_FLOAT;
      } else if (!strcmp(dtype, "int32")) {
        in->dtype = TF_INT32;
      } else {
        die("unsupported dtype", dtype);
      }
      in->value_bytes = 4;
      in->data = read_file(path, &size);
      in->rows = size / (in->value_bytes * (in->width ? in->width : 1));
      if (!in->rows) die("no rows in", path);
    } else if (!strcmp(key, "output") && num_outputs < MAX_IO) {
      if (sscanf(line, "%*s %511s %d", output_ops[num_outputs],
                 &output_index[num_outputs]) != 2)
        die("bad output line", line);
      ++num_outputs;
    } else {
      die("unknown spec line", line);
    }
  }
  fclose(spec);
  if (!export_dir[0] || !num_inputs || !num_outputs || calls < 1 || batch < 1)
    die("the spec needs export, input and output lines", NULL);

  TF_Status *status = TF_NewStatus();
  TF_SessionOptions *options = TF_NewSessionOptions();
  /* ConfigProto: intra_op_parallelism_threads (field 2),
   * inter_op_parallelism_threads (field 5; negative: the caller's thread). */
  unsigned char config[32];
  size_t config_size = put_varint_field(config, 2, intra_op);
  config_size += put_varint_field(config + config_size, 5, inter_op);
  TF_SetConfig(options, config, config_size, status);
  check(status, "session config");
  TF_Graph *graph = TF_NewGraph();
  const char *tags[] = {"serve"};
  double start = now();
  TF_Session *session = TF_LoadSessionFromSavedModel(
      options, NULL, export_dir, tags, 1, graph, NULL, status);
  check(status, "loading the SavedModel");
  double load_seconds = now() - start;

  TF_Output feeds[MAX_IO], fetches[MAX_IO];
  for (int i = 0; i < num_inputs; ++i) {
    feeds[i].oper = TF_GraphOperationByName(graph, inputs[i].op);
    feeds[i].index = 0;
    if (!feeds[i].oper) die("no such input op", inputs[i].op);
  }
  for (int i = 0; i < num_outputs; ++i) {
    fetches[i].oper = TF_GraphOperationByName(graph, output_ops[i]);
    fetches[i].index = output_index[i];
    if (!fetches[i].oper) die("no such output op", output_ops[i]);
  }

  TF_Tensor *values[MAX_IO], *results[MAX_IO];
  double *times = malloc(sizeof(double) * calls);
  for (int call = -20; call < calls; ++call) {
    size_t row = call < 0 ? (size_t)(call + 20) : (size_t)call;
    double t0 = now();
    for (int i = 0; i < num_inputs; ++i)
      values[i] = rows_tensor(&inputs[i], row, 1);
    TF_SessionRun(session, NULL, feeds, values, num_inputs, fetches, results,
                  num_outputs, NULL, 0, NULL, status);
    check(status, "running the signature");
    for (int i = 0; i < num_outputs; ++i) TF_DeleteTensor(results[i]);
    for (int i = 0; i < num_inputs; ++i) TF_DeleteTensor(values[i]);
    if (call >= 0) times[call] = now() - t0;
  }
  qsort(times, calls, sizeof(double), compare);

  double batch_times[3];
  for (int i = 0; i < num_inputs; ++i)
    values[i] = rows_tensor(&inputs[i], 0, (size_t)batch);
  for (int repeat = -1; repeat < 3; ++repeat) {
    double t0 = now();
    TF_SessionRun(session, NULL, feeds, values, num_inputs, fetches, results,
                  num_outputs, NULL, 0, NULL, status);
    check(status, "running the batch");
    for (int i = 0; i < num_outputs; ++i) TF_DeleteTensor(results[i]);
    if (repeat >= 0) batch_times[repeat] = now() - t0;
  }
  for (int i = 0; i < num_inputs; ++i) TF_DeleteTensor(values[i]);
  qsort(batch_times, 3, sizeof(double), compare);

  printf("{\"load_seconds\": %.3f, \"p50_ms\": %.4f, \"p99_ms\": %.4f, "
         "\"calls\": %d, \"batch_rows\": %d, \"batch_rows_per_second\": %.1f, "
         "\"intra_op\": %d, \"inter_op\": %d}\n",
         load_seconds, 1000 * times[(calls - 1) / 2],
         1000 * times[(int)(0.99 * (calls - 1))], calls, batch,
         batch / batch_times[1], intra_op, inter_op);
  TF_CloseSession(session, status);
  TF_DeleteSession(session, status);
  TF_DeleteGraph(graph);
  TF_DeleteSessionOptions(options);
  TF_DeleteStatus(status);
  free(times);
  for (int i = 0; i < num_inputs; ++i) free(inputs[i].data);
  return 0;
}
