// JSON Schema -> GBNF: the grammar of the JSON texts a schema admits, for structured outputs
// (OpenAI's response_format {"type": "json_schema"}, llama.cpp's --json-schema). The grammar's
// start rule is `root`, one rule per line, in the dialect of grammar.h, which llama.cpp's parser
// reads too.
//
// What the grammar admits (where that is only some of the schema's instances, or more of them, the
// entry says so):
//   whitespace    between tokens only ("{", "}", "[", "]", ":", ","), none before or after the
//                 value: nothing, one space, or a line end and up to 20 spaces or tabs (enough
//                 for dump(2)'s indentation to depth 10), so that a model cannot pad forever.
//   true, {}      any JSON value.
//   type          "string", "number", "integer", "boolean", "null", "object", "array", or a list
//                 of them (alternatives). Without "type", the type is inferred from the keywords
//                 present (properties -> object, items -> array, maxLength -> string, ...; several
//                 -> alternatives), and a schema with none of them admits any value.
//   string        JSON's characters ([^"\\\x7F\x00-\x1F] or an escape, where \u escapes of
//                 surrogates come in pairs); minLength / maxLength count characters (code points:
//                 an escape is one, a surrogate pair one; counts up to 1000000); format "date", "time",
//                 "date-time" (RFC 3339: upper-case T and Z only, fractions of 1-9 digits, and days
//                 up to 31 in every month) and "uuid" as patterns.
//   pattern       an ECMA-262 regular expression over the string's characters (the decoded
//                 content), unanchored as JSON Schema says: a match anywhere, unless it starts
//                 with ^ / ends with $ (also per top-level alternative: "^a|b$"). Supported:
//                 literal characters; escapes \d \w \s \D \W \S \n \t \r \f \v \0 \xHH \uHHHH
//                 (surrogate pairs joined) and identity escapes of punctuation (\. \\ \/ \- ...);
//                 classes [...] with ranges, negation and those escapes ([\b] is backspace, []
//                 is refused, [^] is any character); . (any character but \n \r U+2028 U+2029);
//                 groups ( ) and (?: ); |; quantifiers * + ? {m} {m,} {m,n} (counts up to 1000;
//                 lazy ? ignored). Each character is admitted as JSON text spells it: raw where
//                 JSON allows it (not ", \, U+0000-U+001F or DEL), else escaped: \" \\ \b \f \n
//                 \r \t, \u00XX for the other control characters and DEL; "/" also as \/. Other
//                 \u escapes of characters that need none (such as \u00e9 for a raw e-acute)
//                 are not admitted (a subset of the instances). Refused: backreferences (\1,
//                 \k<n>), lookahead / lookbehind, named groups, other (?...) groups and flags,
//                 \b \B, ^ / $ anywhere but the ends, \p{...}, \u{...}, \c, octal escapes,
//                 other letter escapes, unbalanced ( ) [, a quantifier with nothing to repeat,
//                 * + {m,} over what can match the empty string (such as (a*)*), classes that
//                 match nothing, and "pattern" beside minLength, maxLength or format.
//   integer       "-"? ("0" | [1-9] [0-9]{0,15}): at most 16 digits. minimum 0 / 1 and
//                 exclusiveMinimum -1 / 0 (no minus sign; no leading "0" for the positive ones).
//   number        an integer, then "." and 1-16 digits, then [eE] [-+]? and 1-16 digits, each
//                 optional. minimum 0 (no minus sign). Formats int32, int64, float, double are
//                 annotations on numbers.
//   enum, const   the values (any JSON), filtered by "type" when both are given, each spelled as
//                 nlohmann's compact dump() spells it (numbers: 1.0 is "1.0", never "1" or
//                 "1e0"), with whitespace allowed between the tokens of arrays and objects. Other
//                 keywords beside enum / const are not applied to the values.
//   object        "properties" in the schema's order (a subset of JSON's instances, which may
//                 order keys freely); those in "required" always present, the others optional;
//                 keys spelled as dump() spells them. "additionalProperties": absent or false ->
//                 no other keys (OpenAI's strict mode; absent admits any object only where there
//                 are no "properties"); true or a schema -> further members, keys any string (a
//                 listed key again included: the grammar cannot exclude duplicates), after the
//                 listed ones. A property whose schema is false is never present.
//   array         "prefixItems" (or draft-04's "items": [...] with "additionalItems"), then
//                 "items" (a schema; absent or true: any value; false: no more), "minItems",
//                 "maxItems".
//   anyOf, oneOf  alternatives (oneOf as anyOf: the grammar does not exclude instances that
//                 match several); "allOf" only over object schemas, merged (properties in order,
//                 required lists joined, additionalProperties intersected).
//   $ref          "#" and "#/..." (JSON pointers, ~0 ~1 unescaped) into the root schema, such as
//                 "#/$defs/Name" and "#/definitions/Name"; one rule per referenced schema,
//                 generated once, so references may recurse (a cycle that consumes nothing, such
//                 as A -> anyOf [A, ...], is refused).
//   annotations   title, description, default, examples, $schema, $id, $comment, deprecated,
//                 readOnly, writeOnly, and $defs / definitions (read only through $ref).
// Everything else throws attn::Error naming the keyword (or value) and the schema's path, e.g.
// `json_schema: unsupported keyword "if" at /properties/a`: "minimum" and other bounds
// of numbers, "multipleOf", other formats, "uniqueItems", "contains", "minProperties",
// "patternProperties", "propertyNames", "dependentRequired", "if", remote $refs, "required"
// naming a property that "properties" lacks, schemas that are not objects or booleans, schemas
// nested more than 64 deep, and JSON documents nested more than 512 deep. Rule names follow property paths
// (sanitized to [A-Za-z0-9-] and made unique); identical rule bodies share one rule.
#pragma once

#include <nlohmann/json_fwd.hpp>
#include <string>
#include <string_view>

namespace attn {

// A GBNF literal of `bytes` (UTF-8 passes through; quotes, backslashes and control bytes escaped).
std::string GbnfLiteral(std::string_view bytes);

// Properties are written in the order of the schema's keys: nlohmann::json holds them sorted,
// ordered_json (and the text overloads, which parse into it) as the schema lists them.
std::string JsonSchemaToGbnf(const nlohmann::ordered_json& schema);
std::string JsonSchemaToGbnf(const nlohmann::json& schema);
// Parses `schema_text` as JSON first (attn::Error "json_schema: not valid JSON: ..." if it is not).
std::string JsonSchemaToGbnf(std::string_view schema_text);
// Text overloads for the arguments that would be ambiguous between the ones above.
inline std::string JsonSchemaToGbnf(const char* schema_text) {
  return JsonSchemaToGbnf(std::string_view(schema_text));
}
inline std::string JsonSchemaToGbnf(const std::string& schema_text) {
  return JsonSchemaToGbnf(std::string_view(schema_text));
}

}  // namespace attn
