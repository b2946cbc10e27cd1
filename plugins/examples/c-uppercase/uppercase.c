/*
 * c-uppercase: a map plugin written in C against Runnel plugin ABI version 1
 * (plugins/ABI.md), without the Rust SDK and without a C library, to show
 * that the ABI is language-neutral.
 *
 * It upper-cases the ASCII letters of every record value; keys, headers,
 * timestamps and non-ASCII bytes are left alone, and a null value stays
 * null. It takes no configuration: any configuration other than `{}` is
 * refused (runnel_init returns 1 after logging why).
 *
 * Since a map's output record has exactly the layout of its input record
 * (offset 0, source_index = its index, same lengths), the plugin rewrites
 * the input batch in place and returns that region as its output: no copy,
 * no allocator. The region stays valid until the next call, as the ABI
 * requires.
 *
 * Build (plugins/build.sh does this):
 *   clang --target=wasm32 -O2 -ffreestanding -nostdlib -fno-builtin \
 *         -Wl,--no-entry -o c-uppercase.wasm uppercase.c
 */

#include <stddef.h>
#include <stdint.h>

#define EXPORT(name) __attribute__((export_name(name)))
#define IMPORT(name) __attribute__((import_module("env"), import_name(name)))

IMPORT("runnel_log") void runnel_log(int32_t level, const char *ptr, int32_t len);
IMPORT("runnel_fail") __attribute__((noreturn)) void runnel_fail(const char *ptr, int32_t len);

#define LOG_ERROR 1
#define LOG(level, literal) runnel_log((level), (literal), (int32_t)(sizeof(literal) - 1))
#define FAIL(literal) runnel_fail((literal), (int32_t)(sizeof(literal) - 1))

#define RECORD_FIXED_BYTES 32
#define PAGE_BYTES 65536u

/* First byte after the module's data and stack; provided by wasm-ld. */
extern unsigned char __heap_base;

EXPORT("runnel_abi_version") int32_t runnel_abi_version(void) { return 1; }

EXPORT("runnel_kind") int32_t runnel_kind(void) { return 2; /* map */ }

/*
 * One buffer at __heap_base, grown as needed: the host writes the
 * configuration or a batch into it and calls us right after.
 */
EXPORT("runnel_alloc") int32_t runnel_alloc(int32_t len) {
    if (len < 0) {
        return 0;
    }
    uint64_t base = ((uintptr_t)&__heap_base + 7u) & ~(uint64_t)7u;
    uint64_t end = base + (uint64_t)len;
    uint64_t have = (uint64_t)__builtin_wasm_memory_size(0) * PAGE_BYTES;
    if (end > have) {
        size_t pages = (size_t)((end - have + PAGE_BYTES - 1) / PAGE_BYTES);
        if (__builtin_wasm_memory_grow(0, pages) == (size_t)-1) {
            return 0;
        }
    }
    return (int32_t)base;
}

static int is_space(uint8_t c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

EXPORT("runnel_init") int32_t runnel_init(int32_t ptr, int32_t len) {
    const uint8_t *p = (const uint8_t *)(uintptr_t)ptr;
    const uint8_t *end = p + len;
    while (p < end && is_space(*p)) p++;
    if (p < end && *p == '{') p++; else goto refuse;
    while (p < end && is_space(*p)) p++;
    if (p < end && *p == '}') p++; else goto refuse;
    while (p < end && is_space(*p)) p++;
    if (p == end) {
        return 0;
    }
refuse:
    LOG(LOG_ERROR, "c-uppercase takes no configuration");
    return 1;
}

static uint32_t read_u32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void write_u32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

/* Skips `len` bytes (-1: null) after checking they are there. */
static uint8_t *skip(uint8_t *at, const uint8_t *end, int32_t len) {
    if (len < -1) {
        FAIL("negative length in batch");
    }
    if (len > 0) {
        if (end - at < len) {
            FAIL("truncated batch");
        }
        at += len;
    }
    return at;
}

EXPORT("runnel_process") int64_t runnel_process(int32_t ptr, int32_t len) {
    uint8_t *batch = (uint8_t *)(uintptr_t)ptr;
    const uint8_t *end = batch + len;
    if (len < 4) {
        FAIL("batch shorter than its record count");
    }
    uint32_t count = read_u32(batch);
    uint8_t *at = batch + 4;
    for (uint32_t i = 0; i < count; i++) {
        if (end - at < RECORD_FIXED_BYTES) {
            FAIL("truncated record");
        }
        uint8_t *record = at;
        for (int k = 0; k < 8; k++) {
            record[k] = 0; /* output offset: ignored by the host, written as 0 */
        }
        write_u32(record + 16, i); /* source_index: one output per input */
        int32_t key_len = (int32_t)read_u32(record + 20);
        int32_t value_len = (int32_t)read_u32(record + 24);
        uint32_t header_count = read_u32(record + 28);
        at += RECORD_FIXED_BYTES;
        at = skip(at, end, key_len);
        uint8_t *value = at;
        at = skip(at, end, value_len);
        for (int32_t j = 0; j < value_len; j++) {
            if (value[j] >= 'a' && value[j] <= 'z') {
                value[j] = (uint8_t)(value[j] - 'a' + 'A');
            }
        }
        for (uint32_t h = 0; h < header_count; h++) {
            if (end - at < 4) {
                FAIL("truncated header");
            }
            uint32_t name_len = read_u32(at);
            if (name_len > 0x7fffffffu) {
                FAIL("header name too long");
            }
            at = skip(at + 4, end, (int32_t)name_len);
            if (end - at < 4) {
                FAIL("truncated header");
            }
            int32_t header_value_len = (int32_t)read_u32(at);
            at = skip(at + 4, end, header_value_len);
        }
    }
    if (at != end) {
        FAIL("bytes after the last record");
    }
    return (int64_t)((uint64_t)(uint32_t)ptr << 32 | (uint32_t)len);
}
