# soupd_embed(NAME OUT_C FILES): generates OUT_C defining
#   const struct embedded_file NAME[]; const size_t NAME_count;
# (struct embedded_file is declared in server/embedded.h), one entry per file
# in name order, each NUL-terminated. Regenerated when any input changes.
function(soupd_embed name out files)
  list(SORT files)
  # a list's ';' would end the shell command: pass the names '|'-separated
  string(REPLACE ";" "|" files_arg "${files}")
  add_custom_command(
    OUTPUT ${out}
    COMMAND ${CMAKE_COMMAND} -DNAME=${name} -DOUT=${out} "-DFILES=${files_arg}"
            -P ${CMAKE_SOURCE_DIR}/cmake/embed_gen.cmake
    DEPENDS ${files} ${CMAKE_SOURCE_DIR}/cmake/embed_gen.cmake
    COMMENT "Embedding ${name}"
    VERBATIM)
endfunction()
