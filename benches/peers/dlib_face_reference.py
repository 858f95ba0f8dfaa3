import dlib, numpy as np, json
from PIL import Image
M='/work/scratch/facevenv/lib/python3.11/site-packages/face_recognition_models/models/'
rec=dlib.face_recognition_model_v1(M+'dlib_face_recognition_resnet_model_v1.dat')
sp=dlib.shape_predictor(M+'shape_predictor_5_face_landmarks.dat')
out=[]
for s,i in [(1,1),(1,2),(7,3),(13,5),(22,9),(40,10)]:
    p=f's{s}/{i}.pgm'
    g=np.array(Image.open('/work/main/corpora/orl-faces/'+p).convert('L'))
    r=dlib.rectangle(7,28,85,106)
    sh=sp(g,r)
    rgb=np.stack([g]*3,-1).copy()
    sh2=sp(rgb,r)
    print([(sh.part(k),sh2.part(k)) for k in range(5)]); sh=sh2
    cd=dlib.get_face_chip_details(sh,150,0.25)
    chip=dlib.get_face_chip(rgb,sh,150,0.25)
    d=np.array(rec.compute_face_descriptor(rgb,sh))
    d2=np.array(rec.compute_face_descriptor(chip))
    Image.fromarray(chip).save(f'chip_s{s}_{i}.png')
    out.append(dict(path=p,rect=[7,28,85,106],parts=[[sh.part(k).x,sh.part(k).y] for k in range(5)],
        chip_rect=[cd.rect.left(),cd.rect.top(),cd.rect.right(),cd.rect.bottom()],chip_angle=cd.angle,
        descriptor=[round(float(x),6) for x in d], descriptor_from_chip_diff=float(np.abs(d-d2).max())))
json.dump(out,open('dlib_reference.json','w'),indent=1)
print(json.dumps(out[0])[:600])
