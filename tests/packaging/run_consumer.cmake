# cmake -DMODE=<find_package|subdirectory|fetchcontent> -DRLCORE_SOURCE=<dir> -DRLCORE_BUILD=<dir>
#       -DWORK=<dir> [-DWITH_CUDA=ON] -P run_consumer.cmake
# Installs rlcore (find_package mode), then configures, builds and runs the consumer.
file(REMOVE_RECURSE ${WORK})
set(consumer_args -DRLCORE_CONSUME_MODE=${MODE} -DRLCORE_SOURCE_DIR=${RLCORE_SOURCE} -G Ninja)
if(MODE STREQUAL "find_package")
  execute_process(COMMAND ${CMAKE_COMMAND} --install ${RLCORE_BUILD} --prefix ${WORK}/prefix
                  RESULT_VARIABLE rc)
  if(rc)
    message(FATAL_ERROR "install failed: ${rc}")
  endif()
  list(APPEND consumer_args -DCMAKE_PREFIX_PATH=${WORK}/prefix)
  if(WITH_CUDA)
    list(APPEND consumer_args -DRLCORE_CONSUMER_CUDA=ON)
  endif()
endif()
execute_process(COMMAND ${CMAKE_COMMAND} -S ${CMAKE_CURRENT_LIST_DIR}/consumer -B ${WORK}/build
                        ${consumer_args} RESULT_VARIABLE rc)
if(rc)
  message(FATAL_ERROR "configure failed: ${rc}")
endif()
execute_process(COMMAND ${CMAKE_COMMAND} --build ${WORK}/build RESULT_VARIABLE rc)
if(rc)
  message(FATAL_ERROR "build failed: ${rc}")
endif()
execute_process(COMMAND ${WORK}/build/consumer RESULT_VARIABLE rc)
if(rc)
  message(FATAL_ERROR "consumer returned ${rc}")
endif()
