#include <stdio.h>
#include "eta.h"
int main(void){
  struct engine_eta *t=engine_eta_new(); gint64 s=G_USEC_PER_SEC; double MiB=1048576;
  engine_eta_observe(t,"step:x",0,0,100);          /* first send (line 1009) */
  for(int i=1;i<=60;i++) engine_eta_observe(t,"step:x",i*s,i*10*MiB,1000*MiB); /* 10 MiB/s, 60% */
  printf("before retry eta=%ld\n",(long)engine_eta_seconds(t,"step:x",60*s));
  engine_eta_observe(t,"step:x",61*s,0,100);        /* retry: engine_step_update(started,0) */
  printf("after retry send eta=%ld\n",(long)engine_eta_seconds(t,"step:x",61*s));
  for(int i=1;i<=40;i++) engine_eta_observe(t,"step:x",(61+i)*s,i*10*MiB,1000*MiB*(i*10)/(i*10.0)); 
  printf("new copy 20s in eta=%ld, 40s in eta=%ld\n",(long)engine_eta_seconds(t,"step:x",81*s),(long)engine_eta_seconds(t,"step:x",101*s));
  return 0;}
