/*
 * An approval policy in C.
 *
 * Jobs in images off `plugin.images` are refused (the list is the bundle's
 * own; unset, any image may run), and jobs asking for more than
 * `plugin.askAboveTokens` tokens (default 100000) are put to the owner.
 * Every other job runs. The node's own rules (compliance.allowedModels and
 * the rest) are the host's to enforce, whatever this plugin answers.
 *
 * approval_policy.h and approval_policy.c are generated from the host's
 * WIT by wit-bindgen's C generator; README.md has the build commands. The
 * generated code's ownership rules: arguments of an exported function are
 * ours to free, results we return are freed by the bindings after the host
 * has copied them (so they must come from malloc), and strings the host
 * passes are not NUL-terminated. The job is the host's: a borrowed handle
 * whose fields we fetch one call each, and which we drop before returning.
 */

#include <ctype.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "approval_policy.h"

#define IMAGES "plugin.images"
#define ASK_ABOVE "plugin.askAboveTokens"
#define DEFAULT_ASK_ABOVE 100000

typedef approval_policy_string_t string_t;
typedef claude_max_market_policy_types_borrow_job_t job_t;
typedef claude_max_market_policy_types_image_t image_t;
typedef exports_claude_max_market_policy_approval_verdict_t verdict_t;

/* A piece of a string the host passed: not NUL-terminated. */
typedef struct {
    const char *ptr;
    size_t len;
} span_t;

static span_t span(const string_t *s) { return (span_t){(const char *)s->ptr, s->len}; }

static bool span_eq(span_t a, span_t b) { return a.len == b.len && memcmp(a.ptr, b.ptr, a.len) == 0; }

/* Formats into a malloc'd string, the only kind the bindings may free. */
static string_t format(const char *fmt, ...) {
    va_list args;
    va_start(args, fmt);
    int len = vsnprintf(NULL, 0, fmt, args);
    va_end(args);
    char *buf = malloc((size_t)len + 1);
    if (!buf) abort();
    va_start(args, fmt);
    vsnprintf(buf, (size_t)len + 1, fmt, args);
    va_end(args);
    return (string_t){(uint8_t *)buf, (size_t)len};
}

/* One setting through the `settings` import; false when it is unset. */
static bool setting(const char *key, string_t *value) {
    string_t name;
    approval_policy_string_set(&name, key);
    return claude_max_market_policy_settings_get(&name, value);
}

/* A whole number of tokens: digits only, and it must fit in 64 bits. */
static bool parse_tokens(span_t raw, uint64_t *tokens) {
    uint64_t n = 0;
    if (raw.len == 0) return false;
    for (size_t i = 0; i < raw.len; i++) {
        if (raw.ptr[i] < '0' || raw.ptr[i] > '9') return false;
        uint64_t digit = (uint64_t)(raw.ptr[i] - '0');
        if (n > (UINT64_MAX - digit) / 10) return false;
        n = n * 10 + digit;
    }
    *tokens = n;
    return true;
}

/* Why a plugin.askAboveTokens value is refused. */
static string_t ask_above_problem(span_t raw) {
    return format("%s must be a whole number of tokens, not '%.*s'", ASK_ABOVE, (int)raw.len, raw.ptr);
}

/* The next comma-separated entry of `*rest`, trimmed; false at the end. */
static bool next_image(span_t *rest, span_t *image) {
    while (rest->len > 0) {
        const char *comma = memchr(rest->ptr, ',', rest->len);
        size_t take = comma ? (size_t)(comma - rest->ptr) : rest->len;
        span_t entry = {rest->ptr, take};
        rest->ptr += comma ? take + 1 : take;
        rest->len -= comma ? take + 1 : take;
        while (entry.len > 0 && isspace((unsigned char)entry.ptr[0])) entry.ptr++, entry.len--;
        while (entry.len > 0 && isspace((unsigned char)entry.ptr[entry.len - 1])) entry.len--;
        if (entry.len > 0) {
            *image = entry;
            return true;
        }
    }
    return false;
}

/* `registry:5000/team/agent:3` -> `registry:5000/team/agent`. */
static span_t repository(span_t reference) {
    const char *at = memchr(reference.ptr, '@', reference.len);
    span_t name = {reference.ptr, at ? (size_t)(at - reference.ptr) : reference.len};
    size_t slash = 0;
    for (size_t i = 0; i < name.len; i++) {
        if (name.ptr[i] == '/') slash = i + 1;
    }
    for (size_t i = name.len; i > slash; i--) {
        if (name.ptr[i - 1] == ':') return (span_t){name.ptr, i - 1};
    }
    return name;
}

/* The refusal for an image off the list, or an empty string when it is on
 * it (or the list is empty). */
static string_t refuse_image(span_t list, span_t reference) {
    span_t rest = list, image, repo = repository(reference);
    bool listed = false, any = false;
    while (next_image(&rest, &image)) {
        any = true;
        listed = listed || span_eq(image, reference) || span_eq(image, repo);
    }
    if (!any || listed) return (string_t){NULL, 0};
    /* Room for every entry with ", " between them, and a NUL. */
    char *joined = malloc(list.len * 2 + 1);
    if (!joined) abort();
    size_t len = 0;
    rest = list;
    while (next_image(&rest, &image)) {
        if (len > 0) memcpy(joined + len, ", ", 2), len += 2;
        memcpy(joined + len, image.ptr, image.len), len += image.len;
    }
    string_t reason = format("image %.*s is not one of %.*s (%s)", (int)reference.len, reference.ptr,
                             (int)len, joined, IMAGES);
    free(joined);
    return reason;
}

bool exports_claude_max_market_policy_config_check_validate_config(
    approval_policy_list_tuple2_string_string_t *config, approval_policy_list_string_t *err) {
    /* Should the key come twice, the last value wins, as in a Python dict. */
    const span_t key = {ASK_ABOVE, sizeof ASK_ABOVE - 1};
    const string_t *raw = NULL;
    for (size_t i = 0; i < config->len; i++) {
        if (span_eq(span(&config->ptr[i].f0), key)) raw = &config->ptr[i].f1;
    }
    uint64_t tokens;
    bool ok = raw == NULL || parse_tokens(span(raw), &tokens);
    if (!ok) {
        err->ptr = malloc(sizeof(string_t));
        if (!err->ptr) abort();
        err->ptr[0] = ask_above_problem(span(raw));
        err->len = 1;
    }
    approval_policy_list_tuple2_string_string_free(config);
    return ok;
}

static verdict_t verdict(uint8_t tag, string_t reason) {
    verdict_t v = {.tag = tag};
    if (tag == EXPORTS_CLAUDE_MAX_MARKET_POLICY_APPROVAL_VERDICT_DENY) v.val.deny = reason;
    if (tag == EXPORTS_CLAUDE_MAX_MARKET_POLICY_APPROVAL_VERDICT_ASK) v.val.ask = reason;
    return v;
}

static verdict_t judge(job_t job) {
    string_t images, raw;
    if (setting(IMAGES, &images)) {
        image_t image;
        claude_max_market_policy_types_method_job_image(job, &image);
        string_t refusal = refuse_image(span(&images), span(&image.reference));
        claude_max_market_policy_types_image_free(&image);
        approval_policy_string_free(&images);
        if (refusal.len > 0) return verdict(EXPORTS_CLAUDE_MAX_MARKET_POLICY_APPROVAL_VERDICT_DENY, refusal);
    }
    uint64_t limit = DEFAULT_ASK_ABOVE;
    if (setting(ASK_ABOVE, &raw)) {
        bool ok = parse_tokens(span(&raw), &limit);
        /* validate-config refuses such a value before any decision; should
         * one get here all the same, it fails closed. */
        string_t problem = ok ? (string_t){NULL, 0} : ask_above_problem(span(&raw));
        approval_policy_string_free(&raw);
        if (!ok) return verdict(EXPORTS_CLAUDE_MAX_MARKET_POLICY_APPROVAL_VERDICT_DENY, problem);
    }
    claude_max_market_policy_types_budget_t budget;
    claude_max_market_policy_types_method_job_budget(job, &budget);
    if (budget.tokens > limit) {
        string_t id;
        claude_max_market_policy_types_method_job_id(job, &id);
        string_t question = format("job %.*s asks for %llu tokens, more than %llu (%s); run it?", (int)id.len,
                                   (const char *)id.ptr, (unsigned long long)budget.tokens,
                                   (unsigned long long)limit, ASK_ABOVE);
        approval_policy_string_free(&id);
        return verdict(EXPORTS_CLAUDE_MAX_MARKET_POLICY_APPROVAL_VERDICT_ASK, question);
    }
    return verdict(EXPORTS_CLAUDE_MAX_MARKET_POLICY_APPROVAL_VERDICT_ALLOW, (string_t){NULL, 0});
}

void exports_claude_max_market_policy_approval_decide(job_t job, verdict_t *ret) {
    *ret = judge(job);
    /* A borrowed handle must be given back before the call returns. */
    claude_max_market_policy_types_job_drop_borrow(job);
}
