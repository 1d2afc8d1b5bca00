# Embeds a text file in a C++ header as one raw string literal, so the binary carries it (the
# viewer page of `attn inspect`: no files to install beside the executable).
#
# Run as a script at build time (CMakeLists.txt adds the command, with the input as a dependency):
#   cmake -DINPUT=page.html -DOUTPUT=page_html.h -DSYMBOL=kPageHtml -P cmake/embed_text.cmake
# or include()d at configure time with the same three variables set, which checks the input early.
#
# The header declares `inline constexpr char SYMBOL[]` in namespace attn::cli. A configure step
# rewrites it only when its text changes.
foreach(var INPUT OUTPUT SYMBOL)
  if(NOT DEFINED ${var})
    message(FATAL_ERROR "embed_text.cmake: ${var} is not set")
  endif()
endforeach()

# The raw string's delimiter (at most 16 characters); the input must not contain its closing form.
set(_embed_delim "attn_embed")
file(READ "${INPUT}" _embed_text)
string(LENGTH "${_embed_text}" _embed_len)
if(_embed_len GREATER 1000000)
  message(FATAL_ERROR "embed_text.cmake: ${INPUT} is ${_embed_len} bytes; keep embedded files under 1 MB")
endif()
string(FIND "${_embed_text}" ")${_embed_delim}\"" _embed_pos)
if(NOT _embed_pos EQUAL -1)
  message(FATAL_ERROR "embed_text.cmake: ${INPUT} contains ')${_embed_delim}\"' at byte ${_embed_pos}, "
                      "which would end the C++ raw string early; change the delimiter here")
endif()

get_filename_component(_embed_name "${INPUT}" NAME)
set(_embed_header "// Generated from ${_embed_name} by cmake/embed_text.cmake at build time; do not edit.
#pragma once

namespace attn::cli {

inline constexpr char ${SYMBOL}[] = R\"${_embed_delim}(${_embed_text})${_embed_delim}\";

}  // namespace attn::cli
")
set(_embed_old "")
if(EXISTS "${OUTPUT}")
  file(READ "${OUTPUT}" _embed_old)
endif()
if(NOT _embed_old STREQUAL _embed_header)
  file(WRITE "${OUTPUT}" "${_embed_header}")
elseif(CMAKE_SCRIPT_MODE_FILE)
  # The build ran this because the input is newer than the header: mark the header up to date.
  file(TOUCH "${OUTPUT}")
endif()
